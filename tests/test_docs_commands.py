"""Every `lit-gpt ...` example in README.md and docs/*.md still parses.

Examples are the `lit-gpt` commands of ```bash blocks (a line, with its `\\` continuations, split at `&&`) and the
inline code spans that start with `lit-gpt`. Each is parsed as its subcommand would parse it, without running it:

- `fit`, `validate`, `test`: LightningCLI with `--print_config` appended, which parses every flag and the config and
  exits before anything is built (an example that asks for `--help` runs as written);
- `lr-find`: its own `--lr_find.*` parser, and the rest through LightningCLI with `--print_config`;
- `prepare`: `lit_gpt.cli.prepare.parse` (the config's data section and the `--data.*` flags, checked as
  `TextData`);
- the other subcommands: their module's `_parser()` (argparse), on the example's flags.

Placeholders (`CHECKPOINT`, `N`, `[--flag VALUE]`, `--config ...`) are replaced by concrete values; an inline span
that is only a command name (`lit-gpt export`, `lit-gpt fit|validate|test`) must name subcommands that exist.
A failure names the file, the line and the example.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from lit_gpt.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIGHTNING_COMMANDS = ("fit", "validate", "test")
PLACEHOLDERS = {
    "CHECKPOINT": "runs/example/checkpoints/last.ckpt",
    "FOLDER": "export/hf",
    "CONFIG": "configs/shakespeare-char.yaml",
    "DIR": "tests/lm_eval_tasks",
    "NAME": "wikitext2",
    "TASK": "lit_gpt_choice",
    "BLOCK": "128",
    "N": "2",
    "S": "ddp",
    "B": "12",
    "X": "3e-3",
    "T": "256",
    "C": "1024",
}
"""Each placeholder word of the docs (a whole argument or a path component) and the value it is parsed with."""
VALUE_FOR_ELLIPSIS = {"--config": PLACEHOLDERS["CONFIG"], "--ckpt_path": "last"}
"""`--flag ...` stands for a value of the flag; any other `...` stands for flags left out."""


@dataclass(frozen=True)
class Example:
    """One `lit-gpt` example: where it is written, its text, and the argv (subcommand first) it is parsed as."""

    page: str
    line: int
    text: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: `{self.text}`"


def _concrete(args: list[str]) -> list[str]:
    """``args`` with the placeholders replaced, optional groups (`[--flag VALUE]`) kept and repeats
    (`TASK[,TASK...]`) dropped."""
    out, optional = [], False
    for arg in args:
        arg = re.sub(r"\[,[^\]]*\.\.\.\]", "", arg)
        optional = optional or arg.startswith("[")
        if optional and arg.endswith("]"):  # the value that closes `[--flag VALUE]`
            arg, optional = arg.removesuffix("]"), False
        bare = arg.removeprefix("[").removesuffix("]")
        if bare.startswith("--") or bare in PLACEHOLDERS:
            arg = bare
        if arg == "...":
            if out and out[-1] in VALUE_FOR_ELLIPSIS:
                out.append(VALUE_FOR_ELLIPSIS[out[-1]])
            continue
        out.append("/".join(PLACEHOLDERS.get(part, part) for part in arg.split("/")))
    return out


def _blank_fences(text: str) -> tuple[str, list[tuple[int, list[str]]]]:
    """The page with every fenced block blanked (line count kept), and the ```bash blocks as (first line, lines)."""
    kept, blocks, current, fenced = [], [], None, False
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced, current = not fenced, [] if not fenced and stripped == "```bash" else None
            if current is not None:
                blocks.append((number + 1, current))
            kept.append("")
            continue
        kept.append("" if fenced else line)
        if current is not None:
            current.append(line)
    return "\n".join(kept), blocks


def _bash_examples(page: str, start: int, lines: list[str]) -> list[Example]:
    """The `lit-gpt` commands of one ```bash block whose first line is line ``start`` of ``page``."""
    found, i = [], 0
    while i < len(lines):
        number, command = start + i, lines[i]
        while command.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        for segment in command.split("&&"):
            args = shlex.split(segment, comments=True)
            if "lit-gpt" in args:
                args = args[args.index("lit-gpt") + 1 :]
                found.append(Example(page, number, " ".join(["lit-gpt", *args]), tuple(_concrete(args))))
    return found


def collect() -> list[Example]:
    """Every example of README.md and docs/*.md, in page order."""
    examples = []
    for path in PAGES:
        page = str(path.relative_to(ROOT))
        text, blocks = _blank_fences(path.read_text(encoding="utf-8"))
        for start, lines in blocks:
            examples += _bash_examples(page, start, lines)
        for match in re.finditer(r"`([^`]+)`", text):
            words = shlex.split(match.group(1)) if match.group(1).startswith("lit-gpt") else []
            if not words or words[0] != "lit-gpt":
                continue
            line = text.count("\n", 0, match.start()) + 1
            examples.append(Example(page, line, " ".join(words), tuple(_concrete(words[1:]))))
    return sorted(examples, key=lambda example: (example.page, example.line))


EXAMPLES = collect()


def _parse_lightning(argv: list[str], run: bool) -> None:
    """Parse ``argv`` with the LightningCLI (``--print_config`` appended unless it asks for help); raises on a parse
    error, returns when the parser exits with status 0."""
    from lit_gpt.train.lightning_cli import build_cli

    asks_help = any(a in ("-h", "--help") or a.endswith(".help") for a in argv)
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit_info:
        build_cli(argv if asks_help else [*argv, "--print_config"], run=run)
    assert exit_info.value.code in (0, None), f"exit status {exit_info.value.code}"


def _parse(argv: list[str]) -> None:
    """Parse ``argv`` (subcommand first) as that subcommand does, without running it."""
    command, flags = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        _parse_lightning(argv, run=True)
    elif command == "lr-find":
        from lit_gpt.cli import lr_find

        ours, rest = lr_find.split_args(flags)
        lr_find._options_parser().parse_args(ours)
        _parse_lightning(rest, run=False)
    elif command == "prepare":
        from lit_gpt.cli import prepare

        prepare.parse(flags)
    else:
        parser = importlib.import_module(COMMANDS[command])._parser()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(flags)
        except SystemExit as exit_info:  # --help
            assert exit_info.code in (0, None), f"exit status {exit_info.code}"


def test_examples_are_found():
    """The collector sees the examples: every subcommand the docs show, in bash blocks and inline spans."""
    assert len(EXAMPLES) >= 50
    commands = {example.argv[0] for example in EXAMPLES if example.argv}
    shown = {"fit", "prepare", "lr-find", "generate", "export", "quantize", "evaluate", "presets", "train-tokenizer"}
    assert commands >= shown
    assert {example.page for example in EXAMPLES} >= {"README.md", "docs/training.md", "docs/data.md"}


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example_parses(example: Example):
    """The example names an existing subcommand and its flags parse (a bare mention only needs the subcommand)."""
    argv = list(example.argv)
    if not argv or argv[0] in ("-h", "--help"):  # `lit-gpt` or `lit-gpt --help`: the top-level usage
        with contextlib.redirect_stdout(io.StringIO()) as usage:
            main(argv)
        assert usage.getvalue().startswith("usage: lit-gpt"), f"{example}: {usage.getvalue()[:200]!r}"
        return
    names = argv[0].split("|")
    unknown = [name for name in names if name not in COMMANDS]
    assert not unknown, f"{example}: unknown subcommand {unknown} (choose one of {', '.join(COMMANDS)})"
    if len(argv) == 1:
        return  # a mention of the command(s), with no flags to parse
    try:
        _parse(argv)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - any parse failure is reported with the example
        pytest.fail(f"{example} no longer parses: {type(err).__name__}: {' '.join(str(err).split())}")
