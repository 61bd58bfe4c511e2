"""Memory per registration in the location store (psp/location.py).

Measures the resident set size of this process with an empty LocationStore and again after
adding N realistic bindings (distinct AORs, contacts, Call-IDs and deadlines, as the
registrar makes them), and prints the difference per binding.  The target is under 1 KB per
binding at 100,000 bindings.

    python3 bench/location_memory.py --count 100000
"""

from __future__ import annotations

import argparse
import gc
import os
import time

from psp.location import Binding, LocationStore


def resident_bytes() -> int:
    """Current resident set size (Linux /proc), in bytes."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill(store: LocationStore, count: int, now: float) -> None:
    """Add ``count`` bindings shaped like those of real UAs registering over UDP."""
    for i in range(count):
        host = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        store.add(
            Binding(
                aor=f"sip:user{i:06d}@example.com",
                contact=f"sip:user{i:06d}@{host}:5060;transport=udp",
                expires_at=now + 3600.0 + i * 1e-3,
                call_id=f"{i:08x}a3f9c2d14e6b7081@{host}",
                cseq=1000 + i,
                received_from=f"udp:{host}:5060",
                updated_at=now + i * 1e-3,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="bindings to add (default 100000)")
    args = parser.parse_args()
    store = LocationStore()
    gc.collect()
    empty = resident_bytes()
    started = time.perf_counter()
    fill(store, args.count, now=1000.0)
    elapsed = time.perf_counter() - started
    gc.collect()
    full = resident_bytes()
    per = (full - empty) / max(1, args.count)
    print(f"bindings:            {store.count}")
    print(f"resident, empty:     {empty / 2**20:.1f} MiB")
    print(f"resident, full:      {full / 2**20:.1f} MiB")
    print(f"bytes per binding:   {per:.0f}")
    print(f"add rate:            {args.count / elapsed:,.0f} bindings/s")


if __name__ == "__main__":
    main()
