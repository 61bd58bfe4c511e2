"""Logging setup: the PartySIP 0-8 level scale, one line per event, text or JSON.

Every other module logs through ``logging.getLogger(__name__)`` and never configures
logging; this module installs the one handler on the root logger.  Calling
``setup_logging`` again (SIGHUP reload) replaces that handler, so the level, file and
format can change at run time without duplicating output.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import datetime, timezone

__all__ = ["setup_logging", "python_level"]

_OFF = logging.CRITICAL + 10
# PartySIP's scale, index = level: 0 logs nothing, 8 logs everything.
_LEVELS = (_OFF, logging.CRITICAL, logging.ERROR, logging.WARNING, logging.WARNING,
           logging.INFO, logging.INFO, logging.DEBUG, logging.DEBUG)
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_installed: logging.Handler | None = None


def python_level(level: int) -> int:
    """The logging level for a PartySIP level (0 none .. 8 debug); out of range is clamped."""
    return _LEVELS[min(max(level, 0), len(_LEVELS) - 1)]


class _TextFormatter(logging.Formatter):
    """The classic format, kept to one line per event so that log tools can split on lines."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message [, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def _handler(logfile: str | None) -> logging.Handler:
    if logfile is None:
        return logging.StreamHandler()
    # Watched: logrotate may move the file away; the handler then reopens it.
    return logging.handlers.WatchedFileHandler(logfile, encoding="utf-8")


def setup_logging(level: int, logfile: str | None = None, fmt: str = "text") -> None:
    """Send log events at ``level`` (0-8) or more severe to ``logfile`` (None: stderr).

    ``fmt`` is 'text' or 'json'.  Raises OSError when the file cannot be opened, in
    which case the previous setup stays in place.
    """
    global _installed
    handler = _handler(logfile)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter(_TEXT_FORMAT))
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    root.addHandler(handler)
    root.setLevel(python_level(level))
    _installed = handler
