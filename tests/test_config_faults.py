"""Bad config files and values, second round (issue 22): a YAML alias bomb refused in seconds
under a memory cap, every repr in a message capped, non-UTF-8 files, NaN and booleans given
as numbers, a sweep or study file that is not a mapping."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from reslab.config import load_config
from reslab.errors import REPR_LIMIT, ReslabError, short_repr

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))

# The child imports reslab (torch's libraries alone map more than 1 GB of address space),
# then caps its address space at what it has mapped + 1 GB and times the command itself.
# The modules train and summary import when they run are imported first too: the clock is for
# reading the bomb, not for imports (which take seconds on a loaded 2-core machine).
CAPPED = textwrap.dedent("""
    import resource, sys, time
    import torch  # noqa: F401
    import reslab.api, reslab.models.summary  # noqa: F401
    from reslab.cli import build_parser, main
    build_parser()  # imports every command module
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
    start = time.monotonic()
    code = main(sys.argv[1:])
    print(f"seconds {time.monotonic() - start:.3f}")
    sys.exit(code)
""")


def run_capped(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CAPPED, *map(str, args)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", ["summary", "train"])
def test_alias_bomb_is_refused_within_5s_under_a_1gb_cap(tmp_path, command):
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(LAUGHS)
    before = bomb.read_bytes()
    proc = run_capped(command, bomb)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == (f"reslab {command}: error: {bomb}: its aliases (*name) expand to "
                           "over 100,000 values; refused (a YAML alias bomb?)\n")
    assert float(proc.stdout.split()[-1]) < 5.0
    assert bomb.read_bytes() == before and sorted(tmp_path.iterdir()) == [bomb]


def test_a_few_aliases_still_work(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {width: &w 16, stem_width: *w}\ntrain: {epochs: 3}\n")
    assert load_config(cfg).model.stem_width == 16


def test_a_recursive_alias_is_one_line(tmp_path, cli):
    loop = tmp_path / "loop.yaml"
    loop.write_text("data: &d [*d]\n")
    code, _, err = cli("summary", loop)
    assert code == 2 and err == (f"reslab summary: error: {loop}: a YAML alias refers to itself "
                                 "(a recursive structure); refused\n")


def test_a_huge_rejected_value_is_shown_in_at_most_80_characters(tmp_path, cli):
    cfg = tmp_path / "long.yaml"
    cfg.write_text(f"train:\n  lr: [{', '.join(['0.1'] * 5000)}]\n")
    code, _, err = cli("summary", cfg)
    assert code == 2 and err.count("\n") == 1 and len(err) < 300
    assert f"{cfg}: train.lr = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, ...]" in err
    assert len(short_repr("y" * 10_000)) == REPR_LIMIT


@pytest.mark.parametrize("name", ["config", "sweep", "study"])
def test_non_utf8_yaml_is_one_line(tmp_path, cli, name):
    bad = tmp_path / f"{name}.yaml"
    bad.write_bytes(b"train:\n  lr: 0.1 # caf\xe9\n")
    command = {"config": "summary", "sweep": "sweep", "study": "study"}[name]
    code, _, err = cli(command, bad, *(["--check"] if name == "study" else []))
    assert code == 2, err
    assert err == (f"reslab {command}: error: {bad}: not UTF-8 text (byte 22: b'\\xe9'); "
                   "save it as UTF-8\n")


@pytest.mark.parametrize("command, expected", [
    ("sweep", "expected a mapping with base, space, sampler, ..., got a list"),
    ("study", "expected a mapping with name, base, axes, ..., got a list"),
    ("summary", "expected a mapping with sections data, model, train, got a list"),
])
def test_a_file_that_is_not_a_mapping_gets_its_own_message(tmp_path, cli, command, expected):
    path = tmp_path / "file.yaml"
    path.write_text("- 1\n- 2\n")
    code, _, err = cli(command, path, *(["--check"] if command == "study" else []))
    assert code == 2 and err == f"reslab {command}: error: {path}: {expected}\n"


@pytest.mark.parametrize("override, expected", [
    ("train.lr=.nan", "config: train.lr = nan: Input should be a finite number"),
    ("train.lr=.inf", "config: train.lr = inf: Input should be a finite number"),
    ("train.epochs=yes", "config: train.epochs = True: expected a number, not a boolean "
                         "(YAML reads yes/no/on/off as true/false)"),
    ("train.batch_size=on", "config: train.batch_size = True: expected a number, not a "
                            "boolean (YAML reads yes/no/on/off as true/false)"),
])
def test_nan_and_booleans_are_not_numbers(override, expected):
    with pytest.raises(ReslabError) as err:
        load_config(None, [override])
    assert str(err.value) == expected


def test_switches_given_as_booleans_still_work():
    cfg = load_config(None, ["train.ema=true", "train.amp=off", "train.nesterov=yes"])
    assert cfg.train.ema is not None and cfg.train.amp == "off" and cfg.train.nesterov is True


def test_empty_file_is_defaults_for_a_user_config_but_refused_when_required(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).train.epochs == 10
    with pytest.raises(ReslabError, match=f"^{empty}: empty; expected a mapping with sections "
                                          "data, model, train$"):
        load_config(empty, allow_empty=False)
