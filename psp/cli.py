"""The ``partysip`` command line: options, configuration check, and the run path.

Flags mirror the original PartySIP: ``-f`` config file, ``-d`` debug level (overrides
``loglevel``), ``-l`` log file, ``-v`` verbose, ``-V`` version.  ``--check`` only
validates the file.  Exit codes follow sysexits(3): 78 for a bad configuration (including
a section a plugin refuses at start), 73 for a log or recovery file that cannot be opened,
71 for a socket that cannot be bound, 70 for a bug, 64 for a bad command line.  The user
never sees a traceback: problems are one line each on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import NoReturn

from psp import __version__
from psp.config import ConfigError, Settings, load
from psp.logs import setup_logging

__all__ = ["main", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "/etc/partysip/partysip.conf"
VERBOSE_LEVEL = 6
# Fallbacks keep the documented codes on platforms whose os module lacks them.
EX_USAGE = getattr(os, "EX_USAGE", 64)
EX_SOFTWARE = getattr(os, "EX_SOFTWARE", 70)
EX_OSERR = getattr(os, "EX_OSERR", 71)
EX_CANTCREAT = getattr(os, "EX_CANTCREAT", 73)
EX_CONFIG = getattr(os, "EX_CONFIG", 78)

log = logging.getLogger(__name__)


class _UsageError(Exception):
    """Raised instead of argparse's own exit, so that main() returns its code."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _level(text: str) -> int:
    try:
        level = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a level from 0 to 8") from None
    if not 0 <= level <= 8:
        raise argparse.ArgumentTypeError(f"{level} is not a level from 0 to 8")
    return level


def _parser() -> _Parser:
    parser = _Parser(prog="partysip",
                     description="PartySIP: SIP registrar, location service, redirect server and proxy.")
    parser.add_argument("-f", "--config", metavar="FILE", default=DEFAULT_CONFIG,
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration and exit (0: valid, 78: problems on stderr)")
    parser.add_argument("-d", "--debug", metavar="LEVEL", type=_level,
                        help="log level 0 (none) to 8 (debug); overrides loglevel")
    parser.add_argument("-l", "--logfile", metavar="LOGFILE", help="log to this file; overrides log")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help=f"log level {VERBOSE_LEVEL} (info), unless -d is given")
    parser.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    return parser


def _run(settings: Settings) -> int:
    # Imported here so that --check and -V work without the server.
    from psp.plugins.base import PluginError
    from psp.server import run
    from psp.store_sqlite import StoreError
    try:
        return run(settings)
    except PluginError as error:  # the file is valid, but a plugin refuses what it says
        print(f"{settings.path}: {error}", file=sys.stderr)
        return EX_CONFIG
    except StoreError as error:  # names the file and the cause
        print(f"partysip: {error}", file=sys.stderr)
        return EX_CANTCREAT
    except OSError as error:
        log.critical("cannot run: %s", error)
        return EX_OSERR
    except Exception:
        log.critical("internal error, stopping", exc_info=True)
        return EX_SOFTWARE


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        print(f"{parser.format_usage().rstrip()}\npartysip: {error}", file=sys.stderr)
        return EX_USAGE
    except SystemExit as done:  # -h printed the help
        return int(done.code or 0)
    if args.version:
        print(f"partysip {__version__}")
        return 0
    try:
        settings = load(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EX_CONFIG
    if args.check:
        print(f"{args.config}: OK")
        return 0
    level = args.debug if args.debug is not None else VERBOSE_LEVEL if args.verbose else settings.loglevel
    settings = dataclasses.replace(settings, loglevel=level, log=args.logfile or settings.log)
    try:
        setup_logging(settings.loglevel, settings.log, settings.log_format)
    except OSError as error:
        print(f"partysip: cannot open the log file: {error}", file=sys.stderr)
        return EX_CANTCREAT
    return _run(settings)
