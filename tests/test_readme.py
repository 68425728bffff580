"""README.md's config reference names every config key (a new key without a row fails), and its
tables are the ones `reslab config --defaults --markdown` prints (one source)."""
from __future__ import annotations

import re
from pathlib import Path

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
