"""psp.cli (the partysip command) and psp.logs (the logging it sets up)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import psp
from psp import cli, logs
from psp.plugins.base import PluginError
from psp.settings import Settings
from psp.store_sqlite import StoreError
from tests.conftest import ROOT

SHIPPED = str(Path(__file__).resolve().parent.parent / "etc" / "partysip.conf")


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "partysip.conf"
    path.write_text("plugins = syntax rgstrar ls_localdb\nloglevel = 3\n")
    return path


@pytest.fixture
def bad_conf(tmp_path: Path) -> Path:
    path = tmp_path / "bad.conf"
    path.write_text("plugins = syntax\n[localdb]\nmode = sideways\n")
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A stand-in psp.server whose run() records what it got, and no real logging setup."""
    calls: dict[str, Any] = {"exit": 0}

    def run(settings: Settings) -> int:
        calls["settings"] = settings
        if "raise" in calls:
            raise calls["raise"]
        return calls["exit"]

    monkeypatch.setitem(sys.modules, "psp.server", types.SimpleNamespace(run=run))
    monkeypatch.setattr(cli, "setup_logging", lambda *args: calls.setdefault("logging", args))
    yield calls


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-V"]) == 0
    assert capsys.readouterr().out.strip() == f"partysip {psp.__version__}"


def test_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-h"]) == 0
    assert "--check" in capsys.readouterr().out


def test_check_accepts_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check", "-f", SHIPPED]) == 0
    assert capsys.readouterr().err == ""


def test_check_reports_problems_and_exits_78(bad_conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check", "-f", str(bad_conf)]) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"{bad_conf}:3: [localdb] mode: ")
    assert "Traceback" not in err


def test_missing_file_is_one_line_and_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.conf"
    assert cli.main(["-f", str(missing)]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "Traceback" not in err


def test_bad_file_in_run_mode_exits_78_without_running(bad_conf: Path, server: dict[str, Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-f", str(bad_conf)]) == 78
    assert "settings" not in server
    assert "[localdb] mode" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-d", "9"], ["-d", "x"], ["--bogus"]])
def test_bad_command_line_exits_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 64
    assert capsys.readouterr().err.startswith("usage: partysip")


@pytest.mark.parametrize(("flags", "level"), [([], 3), (["-v"], 6), (["-d", "8"], 8), (["-v", "-d", "1"], 1)])
def test_run_passes_settings_with_the_log_level_overrides(conf: Path, server: dict[str, Any],
                                                          flags: list[str], level: int) -> None:
    server["exit"] = 5
    assert cli.main(["-f", str(conf), *flags]) == 5
    settings = server["settings"]
    assert settings.path == str(conf) and settings.loglevel == level
    assert server["logging"] == (level, None, "text")


def test_logfile_flag_overrides_log(conf: Path, server: dict[str, Any], tmp_path: Path) -> None:
    logfile = str(tmp_path / "psp.log")
    assert cli.main(["-f", str(conf), "-l", logfile]) == 0
    assert server["settings"].log == logfile and server["logging"][1] == logfile


@pytest.mark.parametrize(("error", "code"), [(OSError("address in use"), 71), (RuntimeError("bug"), 70)])
def test_server_failure_is_an_exit_code_not_a_traceback(conf: Path, server: dict[str, Any], error: Exception,
                                                        code: int, capsys: pytest.CaptureFixture[str]) -> None:
    server["raise"] = error
    assert cli.main(["-f", str(conf)]) == code
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(("error", "code", "line"), [
    (PluginError("[static] forward: 'x:y' is not host[:port]"), 78,
     "{conf}: [static] forward: 'x:y' is not host[:port]"),
    (StoreError("cannot open recovery file /nowhere/loc.sqlite: disk I/O error"), 73,
     "partysip: cannot open recovery file /nowhere/loc.sqlite: disk I/O error"),
])
def test_a_refusal_at_start_is_one_line_naming_what_and_why(conf: Path, server: dict[str, Any], error: Exception,
                                                            code: int, line: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    server["raise"] = error
    assert cli.main(["-f", str(conf)]) == code
    assert capsys.readouterr().err == line.format(conf=conf) + "\n"


def run_partysip(config: Path) -> subprocess.CompletedProcess[str]:
    """The real command on ``config``; only files are involved: it stops before binding."""
    return subprocess.run([sys.executable, "-m", "psp", "-f", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_the_real_server_refusing_a_plugin_section_exits_78_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "partysip.conf"
    config.write_text(f"plugins = syntax ls_static\nrecovery_file = {tmp_path / 'loc.sqlite'}\n"
                      "[static]\nforward = callee.test not-a-host:port\n")
    done = run_partysip(config)
    assert (done.returncode, done.stdout) == (78, "")
    assert done.stderr == f"{config}: [static] forward: 'not-a-host:port' is not host[:port]\n"


def test_the_real_server_with_a_recovery_file_it_cannot_open_exits_73_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "partysip.conf"
    config.write_text(f"plugins = syntax\nmagicstring = fixed\nrecovery_file = {tmp_path}\n")  # a directory
    done = run_partysip(config)
    assert (done.returncode, done.stdout) == (73, "")
    assert done.stderr.startswith(f"partysip: cannot open recovery file {tmp_path}: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# ---------------------------------------------------------------- psp.logs

@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """Give the test the root logger and put back its handlers and level afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.mark.parametrize(("level", "python"), [
    (0, logging.CRITICAL + 10), (1, logging.CRITICAL), (2, logging.ERROR), (3, logging.WARNING),
    (4, logging.WARNING), (5, logging.INFO), (6, logging.INFO), (7, logging.DEBUG), (8, logging.DEBUG)])
def test_partysip_levels_map_to_logging_levels(level: int, python: int) -> None:
    assert logs.python_level(level) == python


def test_text_log_is_one_line_per_event_and_setup_twice_does_not_duplicate(
        root_logging: logging.Logger, tmp_path: Path) -> None:
    logfile = tmp_path / "psp.log"
    logs.setup_logging(4, str(logfile), "text")
    logs.setup_logging(6, str(logfile), "text")
    logger = logging.getLogger("psp.test")
    logger.debug("not at level 6")
    logger.info("first\nsecond")
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO psp.test: first\\nsecond")


def test_json_log_is_one_object_per_line(root_logging: logging.Logger, tmp_path: Path) -> None:
    logfile = tmp_path / "psp.json"
    logs.setup_logging(8, str(logfile), "json")
    logger = logging.getLogger("psp.test")
    logger.debug("hello %s", "world")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.error("failed", exc_info=True)
    events = [json.loads(line) for line in logfile.read_text().splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in events] == [
        ("DEBUG", "psp.test", "hello world"), ("ERROR", "psp.test", "failed")]
    assert "ValueError: boom" in events[1]["exc"]


def test_level_zero_logs_nothing(root_logging: logging.Logger, tmp_path: Path) -> None:
    logfile = tmp_path / "quiet.log"
    logs.setup_logging(0, str(logfile), "text")
    logging.getLogger("psp.test").critical("silenced")
    assert logfile.read_text() == ""
