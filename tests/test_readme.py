"""README.md as a test: its config reference names every config key (a new key without a row
fails) and its tables are the ones `reslab config --defaults --markdown` prints (one source),
and every command block of README.md and examples/*/README.md runs from a fresh clone, read
from the Markdown itself so an edited README is re-checked."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pydantic import BaseModel

from reslab.config import Config
from reslab.config_reference import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def section(text: str, name: str) -> str:
    """The README text under `### `name`` up to the next heading."""
    start = text.index(f"### `{name}`")
    end = text.find("\n#", start + 1)
    return text[start:end if end != -1 else None]


def submodel(annotation) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def test_every_config_key_has_a_row_in_its_section():
    text = README.read_text()
    missing = []
    for name in ("data", "model", "train"):
        table = section(text, name)
        rows = set(re.findall(r"^\| (.+?) \|", table, flags=re.M))
        keys = {k for row in rows for k in re.findall(r"`([a-z_0-9]+)`", row)}
        sub = Config.model_fields[name].annotation
        for key, field in sub.model_fields.items():
            if key not in keys:
                missing.append(f"{name}.{key}")
            nested = submodel(field.annotation)
            for inner in (nested.model_fields if nested else {}):
                if not re.search(rf"\b{inner}\b", table):
                    missing.append(f"{name}.{key}.{inner}")
    assert missing == []


def test_reference_tables_are_generated_from_config_reference():
    """Regenerate with `reslab config --defaults --markdown` after editing
    src/reslab/config_reference.py."""
    text = README.read_text()
    for name in ("data", "model", "train"):
        table = section(text, name)
        assert markdown_table(name) in table, f"README ### `{name}` differs from config_reference"


# ---------------------------------------------------------------- every command block runs

ROOT = README.parent
READMES = [README, *sorted(ROOT.glob("examples/*/README.md"))]
# READMEs whose blocks run one after the other in one clone, as a reader would go on: the
# studies README's tiny study is then the one README.md ran (resumed: only redrawn). The format
# study's README copies and converts trees that README.md also makes, so it gets its own clone.
OWN_CLONE = {"examples/format-study/README.md"}
CHAINS = [[p for p in READMES if str(p.relative_to(ROOT)) not in OWN_CLONE],
          *([p] for p in READMES if str(p.relative_to(ROOT)) in OWN_CLONE)]
SKIP_MARKER = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
SHELLS = {"bash", "sh", "shell"}
# Every config any command validates is shrunk to one epoch on 10 images per class (digits: 100
# images; the CIFAR-10 stand-in: 100), built-in ResNets at width 8 (library and user models
# ignore the key), small batches, no time budget, no per-run report.
SMOKE = ("train.epochs=1 data.max_per_class=10 model.width=8 train.batch_size=16 "
         "train.eval_batch_size=64 train.time_budget=null train.report=false "
         "train.tensorboard=false train.progress=false")
BLOCK_TIMEOUT = 900


@dataclass(frozen=True)
class Block:
    readme: str    # path relative to the project root
    line: int      # first line of the fence, 1-based
    code: str
    skip: str | None

    @property
    def label(self) -> str:
        return f"{self.readme}:{self.line}"


def command_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The shell code blocks of a Markdown file, each with its skip marker's reason (an HTML
    comment `<!-- readme-test: skip (reason) -->` right before the block) or None."""
    text = path.read_text() if text is None else text
    tokens = MarkdownIt().parse(text)
    blocks = []
    for i, token in enumerate(tokens):
        if token.type != "fence" or token.info.strip() not in SHELLS:
            continue
        before = tokens[i - 1] if i else None
        marker = SKIP_MARKER.search(before.content) if before and before.type == "html_block" \
            else None
        blocks.append(Block(str(path.relative_to(ROOT)), token.map[0] + 1, token.content,
                            marker["reason"] if marker else None))
    return blocks


def fresh_clone(dest: Path) -> Path:
    """The project's files as a clone of this working tree has them (tracked and untracked
    files git does not ignore; no runs, caches or data), at dest/reslab."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    clone = dest / "reslab"
    for rel in filter(None, listed.split("\0")):
        source = ROOT / rel
        if source.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / rel)
    return clone


def block_env(clone: Path) -> dict:
    bin_dir = str(Path(sys.executable).parent)  # where the `reslab` script is installed
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(clone / "src"), "RESLAB_SET": SMOKE, "MPLBACKEND": "Agg",
            "TORCH_HOME": str(clone.parent / "torch-home"),  # no weights: the skips are honest
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def run_block(block: Block, clone: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=clone,
                          env=block_env(clone), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT)


def failure(block: Block, proc: subprocess.CompletedProcess) -> str:
    return (f"{block.label} exited {proc.returncode}:\n{block.code}\n--- stdout\n"
            f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")


def test_every_readme_has_command_blocks_and_skips_say_why():
    for path in READMES:
        blocks = command_blocks(path)
        assert blocks, f"{path}: no command blocks found"
        assert all(b.skip is None or b.skip.strip() for b in blocks)
    assert any(b.skip for b in command_blocks(README)), "the skip marker is no longer parsed"


def test_every_readme_is_run():
    assert sorted(p for chain in CHAINS for p in chain) == sorted(READMES)


@pytest.mark.slow
@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: str(c[0].relative_to(ROOT)))
def test_every_command_block_runs_from_a_fresh_clone(chain, tmp_path, record_property):
    """The READMEs' blocks, top to bottom, in one fresh clone of the project, shrunk by
    RESLAB_SET; blocks marked `readme-test: skip (...)` are listed with their reason."""
    clone = fresh_clone(tmp_path)
    ran = []
    for block in (b for readme in chain for b in command_blocks(readme)):
        if block.skip:
            ran.append(f"skipped {block.label} ({block.skip})")
            continue
        proc = run_block(block, clone)
        assert proc.returncode == 0, failure(block, proc)
        ran.append(f"ran     {block.label} ({len(block.code.splitlines())} lines)")
    record_property("readme_blocks", ran)  # listed in the session summary (conftest)
    print("\n".join(ran))


def without_line(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines(keepends=True) if needle not in line]
    assert len(lines) == len(text.splitlines()) - 1, f"expected one line with {needle!r}"
    return "".join(lines)


def test_deleting_a_data_making_step_fails_the_readme_test(tmp_path):
    """The blocks use the data the READMEs make: without its `reslab data example` line the
    quickstart's predict fails on the missing data/photos, and the format-study README's first
    block fails to copy its missing source tree. (The unedited blocks pass in the test above.)"""
    clone = fresh_clone(tmp_path)
    main = without_line(README.read_text(), "reslab data example data/photos")
    quickstart = next(b for b in command_blocks(README, main) if "reslab predict" in b.code)
    proc = run_block(quickstart, clone)
    assert proc.returncode != 0 and "data/photos" in proc.stderr, failure(quickstart, proc)

    study = ROOT / "examples/format-study/README.md"
    mutated = without_line(study.read_text(), '|| reslab data example "$SRC"')
    first = command_blocks(study, mutated)[0]
    assert "data/format-study" in first.code
    proc = run_block(first, clone)
    assert proc.returncode != 0 and "data/photos" in proc.stderr, failure(first, proc)
