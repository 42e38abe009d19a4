"""The layout's rules, checked on the source: which package may import which, and sizes.

The rules (also in docs/architecture.md):

- ``schemas`` imports nothing of ours; ``models`` only ``schemas``;
- ``streams`` imports ``schemas``, ``models`` and itself, never ``workers`` (except
  ``streams.cli``, which builds the worker apps);
- inside ``streams``, the runtime (``kafka``, ``edge``, ``state`` and the top-level modules)
  never imports the tools around it (``ops``, ``tools``, ``cli``); ``ops`` never imports
  ``tools`` or ``cli``; ``tools`` never imports ``cli``;
- ``workers`` import the runtime only, never ``ops``, ``tools`` or ``cli``.

Sizes: modules stay under ~400 lines and functions under ~60, unless listed below with the
reason.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "models", "streams", "workers")
OURS = PACKAGES

MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS: dict[str, str] = {}
"""``module:function`` -> why it may be longer."""


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def _imports(path: Path) -> Iterator[str]:
    """Every module of ours that ``path`` imports (also inside functions, and TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in OURS:
                yield name


def _layer(module: str) -> str:
    """The layer a module belongs to, for the rules in the module docstring."""
    parts = module.split(".")
    if parts[0] != "streams" or len(parts) == 1:
        return parts[0]
    if parts[1] in ("ops", "tools", "cli"):
        return f"streams.{parts[1]}"
    return "streams.runtime"


ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "models": {"schemas", "models"},
    "streams.runtime": {"schemas", "models", "streams.runtime"},
    "streams.ops": {"schemas", "models", "streams.runtime", "streams.ops"},
    "streams.tools": {"schemas", "models", "streams.runtime", "streams.ops", "streams.tools"},
    "streams.cli": {
        "schemas",
        "models",
        "streams.runtime",
        "streams.ops",
        "streams.tools",
        "streams.cli",
        "workers",
    },
    "workers": {"schemas", "models", "streams.runtime", "workers"},
}


def test_imports_run_one_way() -> None:
    wrong = []
    for module, path in _modules():
        layer = _layer(module)
        for imported in _imports(path):
            target = _layer(imported)
            if target not in ALLOWED[layer]:
                wrong.append(f"{module} ({layer}) imports {imported} ({target})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_checker_sees_a_wrong_way_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from streams.tools.processes import WorkerProcess\nimport workers.x\n")
    found = {_layer(name) for name in _imports(bad)}
    assert found == {"streams.tools", "workers"}
    assert "streams.tools" not in ALLOWED["streams.runtime"]
    assert "workers" not in ALLOWED["models"]


@pytest.mark.parametrize("module", [m for m, _ in _modules()])
def test_modules_and_functions_stay_small(module: str) -> None:
    path = dict(_modules())[module]
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= MAX_MODULE_LINES, f"{module}: {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            name = f"{module}:{node.name}"
            if name not in LONG_FUNCTIONS:
                assert length <= MAX_FUNCTION_LINES, f"{name}: {length} lines"


def test_no_script_folder_shadows_the_standard_library() -> None:
    # A script run as `python bench/x.py` has bench/ first on its import path: a bench/http.py
    # made every other bench script import it instead of the standard library's `http`
    # (urllib does), which failed CI's soak run.
    for folder in ("bench", "deploy/ci", "deploy"):
        for path in (ROOT / folder).glob("*.py"):
            assert path.stem not in sys.stdlib_module_names, f"{path} shadows the stdlib"
