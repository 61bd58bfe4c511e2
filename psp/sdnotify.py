"""The systemd notification protocol, written directly to ``$NOTIFY_SOCKET``.

sd_notify(3): newline-separated ``KEY=VALUE`` assignments in one datagram on a unix
socket whose path is in ``$NOTIFY_SOCKET`` (a leading ``@`` names the abstract
namespace).  Used for ``Type=notify`` (READY=1, STOPPING=1, STATUS=...) and for the
watchdog (WATCHDOG=1 at least every ``$WATCHDOG_USEC``, sd_watchdog_enabled(3)).  Outside
systemd every call is a cheap no-op, so no libsystemd dependency is needed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger("psp.sdnotify")


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._lock = threading.Lock()  # the processor and the main thread both notify
        self._sock: socket.socket | None = None
        self.watchdog_interval = self._watchdog_interval(env)

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Half the watchdog timeout in seconds (systemd's advice), or None when disabled."""
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return None
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        return usec / 2e6 if usec > 0 else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (``notify(READY=1, STATUS="serving")``); False if not sent."""
        if not self._address:
            return False
        data = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(data, self._address)
            except OSError as error:  # the manager went away: not a reason to stop serving
                log.warning("sd_notify to %s failed: %s", self._address, error)
                return False
        return True

    def watchdog(self) -> None:
        """Tell systemd we are alive (called from the processor loop)."""
        self.notify(WATCHDOG=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

