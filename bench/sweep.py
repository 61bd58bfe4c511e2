"""The rate sweep shared by the call and registration benchmarks.

A *run* offers one rate for a fixed time to a freshly started proxy and reports a
:class:`Run`.  A run is *clean* when every call (or registration) SIPp started succeeded,
none failed on either side, and SIPp kept up with the offered rate (it slows down when
the proxy's answers are late, so a late proxy shows as a missed rate, not as a pass).

:func:`sweep` doubles the rate from ``start`` while runs are clean, then bisects between
the last clean and the first unclean rate until they are within ``precision`` of each
other: the highest clean rate it saw is the result.  :func:`latency_runs` then runs at
fractions of it (25 %, 50 %, 90 %) for the response-time percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.common import SippResult, note, percentiles

KEPT_UP = 0.9  # a run whose achieved rate is below this share of the offered one is not clean


@dataclass
class Run:
    """The figures of one run at one offered rate."""

    target: str
    transport: str
    rate: float
    expected: int
    succeeded: int
    failed: int
    peer_failed: int
    retransmissions: int
    seconds: float
    cpu_seconds: float
    latency: dict[str, dict[str, float | int]] = field(default_factory=dict)
    problem: str = ""
    record_routed: int | None = None  # INVITEs the callee saw with Record-Route (traced runs)

    @property
    def achieved(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    @property
    def clean(self) -> bool:
        return not self.problem

    @property
    def cpu_per_1000(self) -> float | None:
        return 1000.0 * self.cpu_seconds / self.succeeded if self.succeeded else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "achieved": round(self.achieved, 1), "clean": self.clean,
                "cpu_per_1000": None if self.cpu_per_1000 is None else round(self.cpu_per_1000, 4)}

    def line(self) -> str:
        cpu = "-" if self.cpu_per_1000 is None else f"{self.cpu_per_1000:.3f}"
        verdict = "clean" if self.clean else f"NOT clean: {self.problem}"
        return (f"{self.target:8} {self.transport} {self.rate:7.0f}/s offered {self.achieved:7.0f}/s done "
                f"ok {self.succeeded} failed {self.failed}+{self.peer_failed} retrans {self.retransmissions} "
                f"cpu/1000 {cpu} s  {verdict}")


def judge(load: SippResult, expected: int, duration: float, peer_failed: int = 0,
          tail: float = 1.0) -> tuple[int, int, float, str]:
    """(succeeded, failed, seconds of load, problem) of a finished SIPp load run.

    ``tail`` is how long one call lasts after it is started (the UAC's pause and round
    trips): the load itself took the elapsed time minus that.
    """
    succeeded = load.counter("SuccessfulCall")
    failed = load.counter("FailedCall")
    seconds = max(duration * 0.5, load.elapsed - tail)
    problems = []
    if failed or peer_failed:
        problems.append(f"{failed} failed at the caller, {peer_failed} at the callee")
    if succeeded < expected:
        problems.append(f"{expected - succeeded} of {expected} did not succeed")
    if not load.stats:
        problems.append(f"no statistics from SIPp (exit {load.returncode}) {load.errors}")
    elif succeeded and succeeded / seconds < KEPT_UP * expected / duration:
        problems.append(f"achieved {succeeded / seconds:.0f}/s of {expected / duration:.0f}/s offered")
    return succeeded, failed, seconds, "; ".join(problems)


def latency_of(load: SippResult) -> dict[str, dict[str, float | int]]:
    return {name: percentiles(samples) for name, samples in sorted(load.rtd.items())}


def sweep(run_at: Callable[[float], Run], start: float, limit: float,
          precision: float = 0.1, max_runs: int = 12) -> tuple[float | None, list[Run]]:
    """The highest clean rate found (None: not even ``start``), and every run made."""
    runs: list[Run] = []
    good: float | None = None
    bad: float | None = None
    rate = start
    while len(runs) < max_runs:
        run = run_at(rate)
        runs.append(run)
        note(run.line())
        if run.clean:
            good = rate
        else:
            bad = rate
        if bad is None:
            if rate >= limit:
                note(f"clean up to the sweep's limit {limit:.0f}/s: the load generator or the limit bounds it")
                break
            rate = min(limit, rate * 2)
        elif good is None:
            if rate <= start / 8:
                break
            rate = rate / 2  # not even the start rate: look lower
        elif (bad - good) / good <= precision:
            break
        else:
            rate = round((good + bad) / 2)
    return good, runs


def latency_runs(run_at: Callable[[float], Run], best: float | None,
                 fractions: Sequence[float] = (0.25, 0.5, 0.9)) -> list[dict[str, Any]]:
    """Runs at ``fractions`` of the best clean rate, with their response-time percentiles."""
    points = []
    for fraction in fractions if best else ():
        run = run_at(max(1.0, round(best * fraction)))
        note(run.line())
        points.append({"fraction": fraction, **run.as_dict()})
    return points
