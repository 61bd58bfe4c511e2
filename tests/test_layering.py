"""The pure core never touches I/O, threads, clocks or the rim's libraries (docs/architecture.md).

The check reads each module's imports with ``ast``, so a forbidden import anywhere in a pure
module -- at the top or inside a function -- fails the test.
"""

import ast
from pathlib import Path

import pytest

PSP = Path(__file__).resolve().parents[1] / "psp"

# Every module of psp/ is listed in exactly one of these (docs/architecture.md's picture).
PURE = (
    "errors", "uri", "headers", "message", "parser", "events", "timers", "transaction",
    "matching", "core", "proxy", "context", "forwarding", "routing", "selection", "branch",
    "registrar", "digest", "location", "settings", "rfc3263",
    "plugins/__init__", "plugins/base", "plugins/chain", "plugins/auth", "plugins/filter",
    "plugins/groups", "plugins/ls_localdb", "plugins/ls_sfull", "plugins/ls_static",
    "plugins/rgstrar", "plugins/syntax",
)
RIM = (
    "__init__", "__main__", "cli", "config", "logs", "metrics", "sdnotify", "server", "processor",
    "transport", "transport_tcp", "resolver", "dnscache", "store_sqlite", "fifo",
)
FORBIDDEN = {
    "threading", "socket", "queue", "time", "selectors", "dns", "prometheus_client",
    "configobj", "validate", "sqlite3", "psp.transport", "psp.transport_tcp",
    "psp.processor", "psp.resolver", "psp.metrics", "psp.server", "psp.config",
    "psp.store_sqlite", "psp.dnscache", "psp.sdnotify", "psp.cli", "psp.logs",
}


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_in(names: set[str]) -> set[str]:
    return {n for n in names for f in FORBIDDEN if n == f or n.startswith(f + ".")}


def test_every_module_is_classified_and_every_listed_one_exists():
    found = {path.relative_to(PSP).with_suffix("").as_posix() for path in PSP.rglob("*.py")}
    assert found - set(PURE) - set(RIM) == set(), "new modules: add them to PURE or RIM"
    assert set(PURE) - found == set(), "pure modules missing from psp/"
    assert set(PURE) & set(RIM) == set()


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_no_rim(name):
    assert forbidden_in(imported_names(PSP / f"{name}.py")) == set()


def test_the_check_catches_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import time\n    from psp.transport import Transport\n")
    assert forbidden_in(imported_names(bad)) == {"time", "psp.transport", "psp.transport.Transport"}
