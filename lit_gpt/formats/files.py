"""The small file helpers every format shares: the output folder and JSON files."""

from __future__ import annotations

import json
from pathlib import Path

from lit_gpt.errors import ConfigError

WHAT_TO_PASS = "pass a .ckpt written by `lit-gpt fit` or a folder written by `lit-gpt export`"
"""The end of the messages that refuse a path as a model: what to give instead."""


def make_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a ``Path``, created with its parents if missing.

    Raises:
        ConfigError: if ``out_dir`` exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder: give a folder to write into (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_json(path: Path) -> dict:
    """The JSON object in ``path``.

    Raises:
        ConfigError: if ``path`` is missing, is not valid UTF-8 JSON, or holds something other than an object.
    """
    if not path.is_file():
        raise ConfigError(f"{path} not found: pass a .ckpt from `lit-gpt fit` or a folder from `lit-gpt export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as indented UTF-8 JSON with a final newline."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
