"""Layering a newcomer can see: `harness report` runs without torch, and the harness modules import each other
without cycles (module-level imports; an import inside a function runs when it is called, not when its module
loads)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "harness"
REPORTS = REPO / "reports"
# the model stack: what `harness eval` and `harness transfer` need and a report must not
MODEL_STACK = ("torch", "transformers", "peft")


@pytest.mark.parametrize("committed", ["superglue-smollm2-135m", "transfer-smollm2-target-lr1e-4"])
def test_report_imports_no_torch(committed, tmp_path):
    """Rendering a committed store (an eval one, a transfer one) through the CLI loads no model stack."""
    for name in ("results.db", "about.md"):
        (tmp_path / name).write_bytes((REPORTS / committed / name).read_bytes())
    script = textwrap.dedent(
        f"""
        import sys
        from harness.cli import main
        sys.argv = ["harness", "report", {str(tmp_path)!r}]
        try:
            main()
        except SystemExit as stop:
            assert not stop.code, stop.code
        print("loaded:", sorted(m for m in {MODEL_STACK!r} if m in sys.modules))
        """
    )
    env = {**os.environ, "HARNESS_NO_PROGRESS": "1", "HARNESS_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "report.md").is_file()
    assert "loaded: []" in run.stdout, run.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]):
    """Import statements that run when the module loads: top level, and inside module-level if/try blocks, but not
    under `if TYPE_CHECKING` (never run) nor inside functions or classes' methods (run when called)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level_imports(block)


def import_graph() -> dict[str, set[str]]:
    """harness module -> the harness modules it imports when it loads (a submodule's import runs its packages too)."""
    paths = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = []
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
                continue
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from harness import plots` imports the module harness.plots; `from harness.x import f`, harness.x
            targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
        deps = set()
        for target in targets:
            while target:  # the module itself and every package above it (their __init__ runs first)
                if target in paths and target not in (name, "harness"):
                    deps.add(target)
                target = target.rpartition(".")[0]
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module: each holds at least one import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_import_graph_sees_the_imports():
    graph = import_graph()
    assert "harness.metrics" in graph["harness.analysis"]
    assert "harness.methods.prompt" in graph["harness.evaluate"]  # from harness.methods import prompt
    assert "harness.plots" in graph["harness.report"]  # from harness import plots
    assert "harness.report_transfer" not in graph["harness.transfer"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles():
    """No harness module imports, at load, one that imports it back (directly or through others). (The
    tasks -> synthetic -> presidents -> tasks cycle was broken when tasks became files: it is not allowed back.)"""
    found = cycles(import_graph())
    assert not found, "import cycles among harness modules: " + "; ".join(" <-> ".join(sorted(c)) for c in found)
