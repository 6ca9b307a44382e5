#!/usr/bin/env python3
"""What one minor page fault costs on this machine: the price of each page a cold start touches
(scripts/coldstart.py counts them, "minor faults").

Two kinds, as a start takes them:

    file   a binary read into the page cache, mapped read-only afresh, one byte read every 16
           pages: each read a fault the kernel serves from the cache (mapping up to 16 pages
           around it), as the binary's text and read-only data are faulted in
    anon   a fresh private anonymous mapping, one byte written per page: each write a zeroed
           page, as the heap, the stack and the relocated data (copy-on-write) are

The time of the loop over the faults it took (getrusage's ru_minflt) is the cost of one, the
interpreter's own work per access included (about 0.1 µs, small beside a fault). Medians of
several passes, each on a new mapping.

Usage: scripts/fault-cost.py [binary] [passes]   (default: target/release/im-callback, 9)
"""

import mmap
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = mmap.PAGESIZE
STRIDE = 16  # pages: one fault-around window apart, so that every read faults


def timed(touch):
    """(µs, minor faults) that `touch()` took."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter_ns()
    touch()
    elapsed = time.perf_counter_ns() - t0
    return elapsed / 1000, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def file_pass(path):
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        try:
            return timed(lambda: [m[off] for off in range(0, size, STRIDE * PAGE)])
        finally:
            m.close()


def anon_pass(pages=512):
    m = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def write():
        for off in range(0, pages * PAGE, PAGE):
            m[off] = 1

    try:
        return timed(write)
    finally:
        m.close()


def report(what, passes):
    per_fault, counts = [], []
    for us, faults in passes:
        if faults:
            per_fault.append(us / faults)
            counts.append(faults)
    if not per_fault:
        sys.exit(f"{what}: no faults counted")
    print(f"{what}: {statistics.median(counts):.0f} faults a pass, "
          f"{statistics.median(per_fault):.2f} µs a minor fault (median of {len(per_fault)} passes; "
          f"range {min(per_fault):.2f}-{max(per_fault):.2f})")


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/release/im-callback"
    passes = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    if not path.is_file():
        sys.exit(f"{path}: no such file (build it first: cargo build --release -p im-callback)")
    path.read_bytes()  # into the page cache: minor faults only
    report(f"file ({path.name})", [file_pass(path) for _ in range(passes)])
    report("anon", [anon_pass() for _ in range(passes)])


if __name__ == "__main__":
    main()
