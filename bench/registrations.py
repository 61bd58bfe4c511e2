"""Registrations per second: SIPp REGISTERs unique users (an injection file) to the registrar.

PartySIP runs with persistence on (its SQLite ``recovery_file``; the rows are counted after
each run), Kamailio (--kamailio) with usrloc in memory, as bench/kamailio.cfg says.  Two
rows: without authentication, and with digest authentication (every REGISTER is
challenged with a 401 and SIPp answers it with [authentication], MD5, qop=auth).

The users are user000000, user000001, ... and every run uses a new proxy, so each REGISTER
creates a new binding.  With authentication, PartySIP needs each user in its [userinfo];
--auth-users caps how many (a configuration of 100,000 users takes the proxy about 9 s to
load), and past that many the injection file wraps round, so that the later REGISTERs of
a run refresh existing bindings; the JSON says how many users were unique.

The same sweep as bench/calls.py: the highest rate with zero failed registrations over
runs of --duration seconds, the REGISTER->200 percentiles at 25/50/90 % of it, and the
proxy's CPU seconds per 1,000 registrations.

    python3 bench/registrations.py --kamailio
    python3 bench/registrations.py --quick --auth off
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the package "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import targets
from bench.common import (LOOPBACK, MACHINE_NOTE, RESULTS, Processes, Sipp, add_common_arguments,
                          cpu_seconds, duration_of, free_port, note, require, write_json)
from bench.sweep import Run, judge, latency_of, latency_runs, sweep

DOMAIN = "localhost"


def user_name(index: int) -> str:
    return f"user{index:06d}"


def write_users(path: Path, count: int) -> Path:
    """The injection file: user;[authentication username=user password=secret-user]."""
    lines = ["SEQUENTIAL"]
    for index in range(count):
        user = user_name(index)
        lines.append(f"{user};[authentication username={user} password={targets.PASSWORD_PREFIX}{user}]")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class RegisterBench:
    """Runs REGISTER loads against fresh proxies."""

    sipp: Sipp
    processes: Processes
    workdir: Path
    duration: float
    auth_users: int
    runs: int = 0

    def users_for(self, count: int, auth: bool) -> int:
        return min(count, self.auth_users) if auth else count

    def start(self, name: str, users: int, auth: bool) -> targets.Target:
        self.runs += 1
        names = [user_name(index) for index in range(users)] if auth else []
        return targets.start(name, self.workdir / f"{name}-{self.runs}", self.processes,
                             users=names, auth=auth, ready_timeout=60 + users / 200)

    def run_at(self, name: str, auth: bool, rate: float) -> Run:
        """``rate`` REGISTERs/s for ``duration`` s against a fresh ``name``."""
        count = max(1, round(rate * self.duration))
        users = self.users_for(count, auth)
        target = self.start(name, users, auth)
        try:
            run = self.load(target, rate, count, users, auth)
        finally:
            target.stop()
        persisted = count_persisted(target)
        if persisted is not None and persisted < min(count, users if auth else count) and run.clean:
            run.problem = f"only {persisted} bindings in the recovery file"
        return run

    def load(self, target: targets.Target, rate: float, count: int, users: int, auth: bool) -> Run:
        """REGISTER ``count`` times (users wrap after ``users``) at ``rate``; the run's figures."""
        injection = write_users(self.workdir / f"users-{self.runs}.csv", users)
        port = free_port()
        before = cpu_seconds(target.pids())
        load = self.sipp.run(
            "register.xml", "-inf", str(injection), "-key", "domain", DOMAIN,
            "-key", "contact", f"{LOOPBACK}:{port}", "-key", "expires", "3600", "-auth_uri", DOMAIN,
            "-r", f"{rate:.0f}", "-l", str(max(50, round(rate))), "-recv_timeout", "8s",
            port=port, transport="u1", calls=count, timeout=self.duration * 2 + 30,
            remote=f"{LOOPBACK}:{target.port}", rtt=True)
        used = cpu_seconds(target.pids()) - before
        succeeded, failed, seconds, problem = judge(load, count, self.duration, tail=0.0)
        # SIPp dumps response times by batches of calls: compare within the dumped ones.
        challenged, answered = len(load.rtd.get("challenge", ())), len(load.rtd.get("register", ()))
        if answered and challenged != (answered if auth else 0):
            problem = "; ".join(filter(None, [problem, f"{challenged} of {answered} were challenged"]))
        if not target.alive():
            problem = f"{target.name} died: {target.log_tail(3)}"
        return Run(target.name, "udp", rate, count, succeeded, failed, 0, load.counter("Retransmissions"),
                   round(seconds, 2), round(used, 3), latency_of(load), problem)


def count_persisted(target: targets.Target) -> int | None:
    """Rows in PartySIP's recovery file after it stopped (None for Kamailio: memory only)."""
    path = target.directory / "location.sqlite"
    if target.name != "partysip" or not path.exists():
        return None
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM bindings").fetchone()[0])
    except sqlite3.Error as error:
        note(f"cannot read {path}: {error}")
        return None


def bench_row(bench: RegisterBench, name: str, auth: bool, args: argparse.Namespace) -> dict[str, Any]:
    def run_at(rate: float) -> Run:
        return bench.run_at(name, auth, rate)
    best, runs = sweep(run_at, args.start_rate, args.max_rate, max_runs=6 if args.quick else 12)
    return {
        "target": name, "auth": auth, "persistence": name == "partysip", "best_rate": best,
        "unique_users": bench.users_for(round((best or 0) * bench.duration), auth) if best else None,
        "sweep": [run.as_dict() for run in runs],
        "latency": [] if args.no_latency else latency_runs(run_at, best),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--auth", choices=("off", "on", "both"), default="both",
                        help="rows without and/or with digest authentication (default both)")
    parser.add_argument("--auth-users", type=int, default=20000,
                        help="at most this many [userinfo] users in the authentication runs (default 20000)")
    parser.add_argument("--start-rate", type=float, default=500, help="first rate of the sweep (default 500)")
    parser.add_argument("--max-rate", type=float, default=16000, help="the sweep stops there (default 16000)")
    parser.add_argument("--no-latency", action="store_true", help="skip the 25/50/90 %% latency runs")
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole registration benchmark for parsed ``args``; writes and returns the JSON figures."""
    sipp_binary = require("sipp", "sip-tester", install=args.install_sipp)
    if args.kamailio:
        require("kamailio", "kamailio", install=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="psp-bench-reg-"))
    processes = Processes()
    bench = RegisterBench(Sipp(sipp_binary, workdir, processes), processes, workdir,
                          duration_of(args), args.auth_users)
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.auth]
    names = ("partysip", "kamailio") if args.kamailio else ("partysip",)
    result: dict[str, Any] = {"benchmark": "registrations", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "machine": MACHINE_NOTE, "duration": bench.duration, "quick": args.quick,
                              "auth_users": args.auth_users, "rows": []}
    try:
        for auth in modes:
            for name in names:
                result["rows"].append(bench_row(bench, name, auth, args))
    finally:
        processes.stop_all()
    write_json(args.out or RESULTS / "registrations.json", result)
    print(f"\nregistrations per second ({result['machine']}):")
    for row in result["rows"]:
        print(f"  {row['target']:8} auth {'on ' if row['auth'] else 'off'}: best clean {row['best_rate']}/s "
              f"(unique users {row['unique_users']}, persistence {'on' if row['persistence'] else 'off'})")
    return result


if __name__ == "__main__":
    main()
