"""The package's architecture, read as a maintainer would: the import graph (function-level imports included) has no
cycle, only the Lightning layer imports Lightning, functions stay short, and the light modules stay light."""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lit_gpt"
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics")
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports, at any level (top, function, class), absolute names; plus any string constant
    that names one of our modules (``importlib.import_module`` tables). ``from package import submodule`` counts as
    importing the submodule only."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(submodules if len(submodules) == len(node.names) else {base, *submodules})
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            if node.value in MODULES:
                found.add(node.value)
    return found


@functools.cache
def project_graph() -> dict[str, set[str]]:
    return {name: frozenset(m for m in imports(name) if m in MODULES and m != name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_and_function_level_imports_are_seen():
    graph = project_graph()
    assert "lit_gpt.train.lightning_cli" in graph["lit_gpt.cli.fit"]  # imported inside main()
    assert "lit_gpt.cli.generate" in graph["lit_gpt.cli"]  # named in the COMMANDS table


def test_no_import_cycles():
    assert find_cycle(project_graph()) is None


def test_only_the_train_layer_imports_lightning():
    importers = {name for name in MODULES if any(m.split(".")[0] in LIGHTNING for m in imports(name))}
    assert importers and all(name.startswith("lit_gpt.train") for name in importers), sorted(importers)


@pytest.mark.parametrize(
    "layer, may_import",
    [
        # the chat module is pure (templates -> ids): lit_gpt.data.sft renders records with it
        ("lit_gpt.data", ("lit_gpt.errors", "lit_gpt.config", "lit_gpt.tokenizer", "lit_gpt.chat", "lit_gpt.data")),
        (
            "lit_gpt.train",
            (
                "lit_gpt.errors",
                "lit_gpt.config",
                "lit_gpt.flops",
                "lit_gpt.tokenizer",
                "lit_gpt.chat",
                "lit_gpt.model",
                "lit_gpt.hf",
                "lit_gpt.lora",
                "lit_gpt.checkpoint",
                "lit_gpt.formats",
                "lit_gpt.generate",
                "lit_gpt.data",
                "lit_gpt.train",
            ),
        ),
    ],
)
def test_layers_import_only_downwards(layer, may_import):
    for name, targets in project_graph().items():
        if name.startswith(layer):
            bad = [t for t in targets if not t.startswith(may_import)]
            assert not bad, f"{name} imports {bad}"


def test_the_core_imports_neither_data_nor_train_nor_cli():
    core = {name for name, path in MODULES.items() if path.parent in (PACKAGE, PACKAGE / "formats")}
    for name in core:
        bad = [t for t in project_graph()[name] if t.startswith(("lit_gpt.data", "lit_gpt.train", "lit_gpt.cli"))]
        assert not bad, f"{name} imports {bad}"


def test_the_core_follows_one_direction():
    # lit_gpt.formats (one module per checkpoint format) is one rung of the core: its modules may import each other
    order = [
        "lit_gpt.errors",
        "lit_gpt.extras",
        "lit_gpt.hub",
        "lit_gpt.rope_scaling",
        "lit_gpt.config",
        "lit_gpt.memory",
        "lit_gpt.flops",
        "lit_gpt.bpe_folder",
        "lit_gpt.spm",
        "lit_gpt.tokenizer_hf",
        "lit_gpt.tokenizer",
        "lit_gpt.chat",
        "lit_gpt.norm_rope",
        "lit_gpt.norm",
        "lit_gpt.rope",
        "lit_gpt.kv_cache",
        "lit_gpt.attention",
        "lit_gpt.model",
        "lit_gpt.meta",
        "lit_gpt.hf_weights",
        "lit_gpt.hf",
        "lit_gpt.hf_tokenizer",
        "lit_gpt.lora",
        "lit_gpt.quantize",
        "lit_gpt.formats",
        "lit_gpt.checkpoint",
        "lit_gpt.generate",
        "lit_gpt.batching",
        "lit_gpt.engine",
        "lit_gpt.evaluate",
        "lit_gpt.passkey",
        "lit_gpt.lm_eval_adapter",
    ]

    def rung(module: str) -> str:
        return "lit_gpt.formats" if module.startswith("lit_gpt.formats") else module

    core = {
        name
        for name, path in MODULES.items()
        if (path.parent == PACKAGE or path.parent == PACKAGE / "formats") and path.name != "__init__.py"
    }
    assert {rung(name) for name in core} == set(order), "place every core module in this order"
    graph = project_graph()
    for name in core:
        above = set(order[order.index(rung(name)) + 1 :])
        bad = {target for target in graph[name] if rung(target) in above}
        assert not bad, f"{name} imports a module above it: {bad}"


def test_no_function_is_longer_than_60_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long


def test_library_modules_have_no_main():
    for name, path in MODULES.items():
        if not name.startswith("lit_gpt.cli"):
            functions = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
            assert "main" not in functions, f"{name} has a main(): commands live in lit_gpt.cli"


def test_every_module_has_a_docstring():
    missing = [name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing


def loaded_after(code: str) -> set[str]:
    """Top-level module names loaded by ``code`` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_pure_layers_never_load_lightning():
    pure = [name for name in MODULES if not name.startswith(("lit_gpt.train", "lit_gpt.cli"))]
    loaded = loaded_after("\n".join(f"import {name}" for name in pure))
    assert not {"lightning", "pytorch_lightning", "torchmetrics", "transformers"} & loaded


def test_config_imports_neither_torch_nor_tiktoken():
    loaded = loaded_after("import lit_gpt.config")
    assert not {"torch", "tiktoken", "numpy", "lightning"} & loaded


LIGHT_COMMANDS = [
    ["--help"],
    ["presets"],
    ["generate", "--help"],
    ["chat", "--help"],
    ["export", "--help"],
    ["prepare", "--help"],
    ["train-tokenizer", "--help"],
    ["quantize", "--help"],
    ["evaluate", "--help"],
    ["serve", "--help"],
]


@pytest.fixture(scope="module")
def lightning_loaded_by() -> dict[str, bool]:
    """For each light command, whether running it in a fresh interpreter loaded ``lightning.pytorch``."""
    script = (
        "import json, subprocess, sys\n"
        "code = 'import sys\\nfrom lit_gpt.cli import main\\ntry:\\n    main(sys.argv[1:])\\nexcept SystemExit:\\n"
        '    pass\\nprint("lightning.pytorch" in sys.modules, file=sys.stderr)\'\n'
        "out = {}\n"
        "for command in json.loads(sys.argv[1]):\n"
        "    r = subprocess.run([sys.executable, '-c', code, *command], capture_output=True, text=True)\n"
        "    out[' '.join(command)] = r.stderr.strip().splitlines()[-1]\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(LIGHT_COMMANDS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return {command: loaded == "True" for command, loaded in json.loads(result.stdout).items()}


@pytest.mark.parametrize("command", LIGHT_COMMANDS, ids=lambda c: " ".join(c))
def test_light_commands_never_import_lightning(lightning_loaded_by, command):
    assert lightning_loaded_by[" ".join(command)] is False


MAX_CLASS_LINES, MAX_MODULE_LINES = 200, 400


def test_no_class_is_longer_than_200_lines_and_no_module_longer_than_400():
    long = []
    for name, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long


# Our own issue numbers ("issue 14") and timings ("about 1 s", "~3 ms", "2.4x slower"): history and measurements belong
# in commit messages and docs/benchmarks.md. A library's bug, cited as owner/repo#N, is a source and may stay.
HISTORY_OR_TIMING = re.compile(
    r"(?i)\bissues? \d+|\b\d+(\.\d+)?\s?(ms|s|sec|seconds|minutes)\b(?![\w-])|\d+(\.\d+)?x (faster|slower)"
)


def test_docstrings_and_comments_hold_no_history_or_timings():
    found = []
    for name, path in MODULES.items():
        text = path.read_text()
        notes = [(t.start[0], t.string) for t in tokenize.generate_tokens(io.StringIO(text).readline)
                 if t.type == tokenize.COMMENT]  # fmt: skip
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node, clean=False)
                if docstring:
                    notes.append((getattr(node, "lineno", 1), docstring))
        found += [
            f"{name}:{line}: {match.group(0)!r}" for line, note in notes for match in HISTORY_OR_TIMING.finditer(note)
        ]
    assert not found
