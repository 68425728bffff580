"""One image lister for training, convert (and predict): hidden files skipped, natural order,
symlinked folders followed alike everywhere, loops refused; convert never writes through a
symlink planted in its destination."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from reslab.data.convert import convert_tree
from reslab.data.imageio import write_image
from reslab.data.sources import list_images, scan_class_tree
from reslab.errors import ReslabError


def img(path: Path, value: int = 0) -> Path:
    write_image(path, np.full((4, 4, 3), value, np.uint8))
    return path


def rel(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def digest(root: Path) -> dict[str, str]:
    """Every file under root (links not followed) -> sha256 of its bytes."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.fixture
def tree(tmp_path) -> Path:
    """Class folders with clutter: hidden files and folders, macOS forks, nested and
    symlinked folders, a symlinked file, non-images."""
    root, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    for name in ("2.png", "10.png", "1.jpg", "sub/3.png"):
        img(root / "cat" / name)
    img(elsewhere / "dogs" / "5.png")
    img(elsewhere / "more" / "6.png")
    img(elsewhere / "single.png")
    (root / "cat" / "._2.png").write_bytes(b"\x00\x05\x16\x07")   # macOS resource fork
    (root / "cat" / ".hidden").mkdir()
    img(root / "cat" / ".hidden" / "7.png")
    (root / "cat" / "notes.txt").write_text("x")
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._2.png").write_bytes(b"\x00")
    (root / ".git").mkdir()
    (root / "dog").symlink_to(elsewhere / "dogs")              # a symlinked class folder
    (root / "dog" / "nested").symlink_to(elsewhere / "more")    # a symlinked subfolder
    (root / "cat" / "linked.png").symlink_to(elsewhere / "single.png")
    return root


def test_list_images_skips_hidden_and_follows_links_in_natural_order(tree):
    assert rel(list_images(tree / "cat"), tree / "cat") == [
        "1.jpg", "2.png", "10.png", "linked.png", "sub/3.png"]
    assert rel(list_images(tree), tree) == [
        "cat/1.jpg", "cat/2.png", "cat/10.png", "cat/linked.png", "cat/sub/3.png",
        "dog/5.png", "dog/nested/6.png"]


def test_training_and_convert_list_the_same_images(tree, tmp_path):
    classes = scan_class_tree(tree)
    assert list(classes) == ["cat", "dog"]  # no '__MACOSX' or '.git' class
    trained = sorted(p.relative_to(tree).with_suffix("").as_posix()
                     for files in classes.values() for p in files)
    assert convert_tree(tree, tmp_path / "out", "srgb-png", progress=False) == 7
    converted = sorted(p.relative_to(tmp_path / "out").with_suffix("").as_posix()
                       for p in (tmp_path / "out").rglob("*.png"))
    assert converted == trained  # the symlinked class folder is converted, not dropped


def test_a_broken_link_is_listed_so_that_reading_it_names_it(tmp_path):
    img(tmp_path / "c" / "a" / "0.png")
    (tmp_path / "c" / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert rel(list_images(tmp_path / "c"), tmp_path / "c") == ["a/0.png", "a/gone.png"]


@pytest.mark.parametrize("target", ["self", "root", "parent-of-root"])
def test_symlink_loops_are_one_line_errors(tmp_path, cli, target):
    src = tmp_path / "src"
    img(src / "a" / "0.png")
    img(src / "b" / "0.png")
    link = src / "a" / "loop"
    link.symlink_to({"self": src / "a", "root": src, "parent-of-root": tmp_path}[target])
    with pytest.raises(ReslabError, match="symlink loop"):
        scan_class_tree(src)
    code, _, err = cli("convert", src, tmp_path / "dst", "--to", "srgb-png")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "symlink loop" in err and str(link) in err
    assert not (tmp_path / "dst").exists()


def test_convert_refuses_a_symlinked_folder_planted_in_dst(tree, tmp_path, cli):
    dst, victim = tmp_path / "dst", tmp_path / "victim"
    img(victim / "2.png", value=77)
    img(victim / "keep.png", value=99)
    before = digest(victim)
    dst.mkdir()
    (dst / "cat").symlink_to(victim)  # outputs for class 'cat' would land in victim/
    code, _, err = cli("convert", tree, dst, "--to", "srgb-png", "--force")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{dst / 'cat'} in the destination is a symlink" in err
    assert digest(victim) == before
    assert list(dst.iterdir()) == [dst / "cat"]  # refused before anything was written


def test_convert_replaces_a_symlinked_file_in_dst_never_its_target(tree, tmp_path, cli):
    dst, victim = tmp_path / "dst", img(tmp_path / "victim.png", value=42)
    before = victim.read_bytes()
    (dst / "cat").mkdir(parents=True)
    (dst / "cat" / "2.png").symlink_to(victim)
    code, _, err = cli("convert", tree, dst, "--to", "srgb-png", "--force")
    assert code == 0, err
    assert victim.read_bytes() == before
    assert not (dst / "cat" / "2.png").is_symlink()  # the link itself was replaced


def test_convert_refuses_a_source_that_lies_inside_dst(tmp_path, cli):
    src, dst = tmp_path / "src", tmp_path / "dst"
    img(src / "a" / "0.png")
    img(dst / "b" / "0.png")
    (src / "b").symlink_to(dst / "b")  # with --force the output would overwrite its source
    before = digest(dst)
    code, _, err = cli("convert", src, dst, "--to", "srgb-png", "--force")
    assert code == 2 and "lies inside the destination" in err
    assert len(err.strip().splitlines()) == 1 and digest(dst) == before


def test_convert_refuses_a_broken_symlink_as_dst(tmp_path, cli):
    img(tmp_path / "src" / "a" / "0.png")
    (tmp_path / "dst").symlink_to(tmp_path / "nowhere")
    code, _, err = cli("convert", tmp_path / "src", tmp_path / "dst", "--to", "srgb-png")
    assert code == 2 and "broken symlink" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()


def test_convert_follows_a_symlinked_dst_the_user_named(tmp_path):
    img(tmp_path / "src" / "a" / "0.png")
    (tmp_path / "real").mkdir()
    (tmp_path / "dst").symlink_to(tmp_path / "real")
    assert convert_tree(tmp_path / "src", tmp_path / "dst", "srgb-png", progress=False) == 1
    assert (tmp_path / "real" / "a" / "0.png").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders")
def test_an_unreadable_folder_is_one_line(tmp_path):
    img(tmp_path / "src" / "a" / "0.png")
    (tmp_path / "src" / "a").chmod(0)
    try:
        with pytest.raises(ReslabError, match="cannot list folder"):
            list_images(tmp_path / "src")
    finally:
        (tmp_path / "src" / "a").chmod(0o755)


def test_predict_lists_a_folder_like_training(tree):
    from reslab.evaluate import image_files

    assert image_files(tree / "cat") == list_images(tree / "cat")  # no '._2.png', '.hidden/'
