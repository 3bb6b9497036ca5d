"""The layer contract, checked rather than remembered.

Every module's imports (top-level and inside functions) are read with
``ast``.  Layers, each importing only from its own layer or below:

    __main__  →  cli  →  ops, render  →  engines, readers, sources  →  base modules

``ops`` reaches an engine only through ``usagebox_cli.engines`` (``open_engine``)
and ``usagebox_cli.engines.base`` (the interface), never a concrete engine,
so a new engine is files under ``engines/`` and nothing in ``ops``.  No
import cycle anywhere, and ``ops`` holds no SQL and no ``sqlite3``.

The checker runs on the real package and, to show that each rule bites, on
small synthetic packages written to ``tmp_path``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "usagebox_cli"
ROOT = Path(__file__).resolve().parent.parent

LAYERS = [  # (module prefix, layer); the longest matching prefix wins
    ("__main__", 5),
    ("cli", 4),
    ("ops", 3),
    ("render", 3),
    ("engines", 2),
    ("readers", 2),
    ("sources", 2),
    ("", 1),  # base modules: events, fields, money, quantity, timewindow, timefmt, exactjson, errors, paths, ...
]
# What a layer above the engines may import of them: the chooser and the interface.
ENGINE_FACES = {"engines", "engines.base"}
SQL = re.compile(
    r"\b(SELECT\b[\s\S]{0,200}?\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|VIEW|TRIGGER)"
    r"|PRAGMA\s+\w+)\b"
)


def modules(root: Path, package: str) -> dict[str, Path]:
    """``{dotted name relative to the package: file}`` ('' is the package itself)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root / package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, package: str, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports, as names relative to the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name != package and not name.startswith(package + "."):
                continue
            relative = name[len(package) + 1:]
            if relative in known:
                out.add(relative)
    return out


def layer(name: str) -> int:
    for prefix, level in LAYERS:
        if prefix == "" or name == prefix or name.startswith(prefix + "."):
            return level
    raise AssertionError(name)


def upward_imports(root: Path, package: str) -> list[str]:
    known = modules(root, package)
    problems = []
    for name, path in known.items():
        for target in sorted(imports(path, package, known)):
            if layer(target) > layer(name):
                problems.append(f"{name} imports {target}, a higher layer")
            elif layer(name) > layer("engines") and target.startswith("engines") and target not in ENGINE_FACES:
                problems.append(f"{name} imports {target}: above the engines, use usagebox_cli.engines or engines.base")
    return problems


def cycles(root: Path, package: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    known = modules(root, package)
    graph = {name: sorted(imports(path, package, known) - {name}) for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def sql_in_ops(root: Path, package: str) -> list[str]:
    problems = []
    for name, path in modules(root, package).items():
        if not (name == "ops" or name.startswith("ops.")):
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(alias.name == "sqlite3" for alias in node.names):
                problems.append(f"{name} imports sqlite3")
            elif isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
                problems.append(f"{name} imports sqlite3")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                problems.append(f"{name} line {node.lineno} holds SQL: {SQL.search(node.value).group(0)[:40]!r}")
            elif isinstance(node, ast.Attribute) and node.attr in ("execute", "executemany", "executescript"):
                problems.append(f"{name} line {node.lineno} calls .{node.attr}()")
    return problems


# -- the real package --------------------------------------------------------------------------


def test_no_module_imports_a_higher_layer_or_a_concrete_engine_from_above():
    assert upward_imports(ROOT, PACKAGE) == []


def test_no_import_cycles():
    assert cycles(ROOT, PACKAGE) == []


def test_ops_holds_no_sql_and_no_sqlite3():
    assert sql_in_ops(ROOT, PACKAGE) == []


def test_the_sqlite_engine_implements_every_operation_of_the_interface():
    from usagebox_cli.engines.sqlite.connection import Database

    assert Database.__abstractmethods__ == frozenset()


# -- each rule fails on a violation --------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in [tmp_path / "pkg", *(p for p in (tmp_path / "pkg").rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return tmp_path


SOUND = {
    "errors.py": "",
    "engines/base.py": "from pkg import errors\n",
    "engines/sqlite/engine.py": "import sqlite3\nfrom pkg.engines.base import Engine\n",
    "ops/periods.py": "from pkg.engines.base import Engine\nfrom pkg import errors\n",
    "cli/app.py": "from pkg.ops import periods\n",
}


def test_a_sound_tree_passes_every_rule(tmp_path):
    root = _tree(tmp_path, SOUND)
    assert (upward_imports(root, "pkg"), cycles(root, "pkg"), sql_in_ops(root, "pkg")) == ([], [], [])


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("ops/periods.py", "def f():\n    from pkg.cli import app\n", "ops.periods imports cli.app, a higher layer"),
    ("engines/base.py", "from pkg.ops import periods\n", "engines.base imports ops.periods, a higher layer"),
    ("errors.py", "import pkg.engines.base\n", "errors imports engines.base, a higher layer"),
    ("ops/periods.py", "from pkg.engines.sqlite import engine\n",
     "ops.periods imports engines.sqlite.engine: above the engines, use usagebox_cli.engines or engines.base"),
])
def test_an_upward_import_fails(tmp_path, name, text, expected):
    root = _tree(tmp_path, {**SOUND, name: text})
    assert expected in upward_imports(root, "pkg")


def test_an_import_cycle_fails_even_through_a_function_level_import(tmp_path):
    root = _tree(tmp_path, {**SOUND, "engines/sqlite/connection.py": "from pkg.engines.sqlite import migrations\n",
                            "engines/sqlite/migrations.py": "def f():\n    from pkg.engines.sqlite.connection import x\n"})
    assert cycles(root, "pkg") == [["engines.sqlite.connection", "engines.sqlite.migrations"]]


@pytest.mark.parametrize(("text", "expected"), [
    ("import sqlite3\n", "ops.periods imports sqlite3"),
    ("from sqlite3 import connect\n", "ops.periods imports sqlite3"),
    ('Q = "SELECT period FROM periods WHERE account_id = ?"\n', "ops.periods line 1 holds SQL: 'SELECT period FROM'"),
    ('Q = ("INSERT INTO periods (account_id)"\n     " VALUES (?)")\n', "ops.periods line 1 holds SQL: 'INSERT INTO'"),
    ('Q = "UPDATE segments SET lines = 1"\n', "ops.periods line 1 holds SQL: 'UPDATE segments SET'"),
    ('Q = "PRAGMA foreign_keys = OFF"\n', "ops.periods line 1 holds SQL: 'PRAGMA foreign_keys'"),
    ("def f(engine):\n    engine.execute('x')\n", "ops.periods line 2 calls .execute()"),
])
def test_sql_or_sqlite3_in_ops_fails(tmp_path, text, expected):
    root = _tree(tmp_path, {**SOUND, "ops/periods.py": text})
    assert sql_in_ops(root, "pkg") == [expected]


def test_prose_that_mentions_select_is_not_sql(tmp_path):
    root = _tree(tmp_path, {**SOUND, "ops/periods.py": '"""Select the series, then delete nothing."""\n'})
    assert sql_in_ops(root, "pkg") == []
