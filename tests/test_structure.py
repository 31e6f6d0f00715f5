"""The package's shape: a pure engine, no import cycles, one place for layer addresses."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipelines"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None; a parent package
    importing its own submodule is not a cycle of the code's design and is left out."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_engine_is_pure():
    """Importing the engine loads no database, workbook or ledger code."""
    code = ("import sys, pipelines.engine; "
            "bad = [m for m in ('sqlalchemy', 'openpyxl', 'pipelines.ledger', 'pipelines.warehouse') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


LAYER_FILE = re.compile(r"""f["'][^"']*\{(as_of|day|delivery)[^}]*\}\.(parquet|json)["']""")


def test_layer_addresses_are_built_in_one_place():
    """A layer's file name (`<as_of>.parquet`, …) is spelled out only in config.Settings."""
    offenders = []
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "dags").glob("*.py")):
        if path == PACKAGE / "config.py" or "demo_data" in path.parts or path.name == "demo_data.py":
            continue  # demo data writes the departments' landing folders, not the pipeline's layers
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if LAYER_FILE.search(line) or re.search(r'"(matches\.parquet|ledger\.json|report\.json|gate\.json)"', line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_deprecation_warnings_are_hidden_only_by_name():
    """The project's own use of a deprecated API (Airflow 3 moves fast) must show in the
    test run: a warnings filter may hide a deprecation only for a named third-party module."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for entry in config["tool"]["pytest"]["ini_options"].get("filterwarnings", []):
        action, _, rest = entry.partition(":")
        fields = rest.split(":")
        if action == "ignore" and "Deprecation" in (fields[1] if len(fields) > 1 else ""):
            module = fields[2] if len(fields) > 2 else ""
            assert module and not module.startswith(("pipelines", "dags")), entry
