"""Run a command several times in a row while busy loops keep every core occupied.

    python tests/busy.py --runs 3 -- .venv/bin/pytest -q tests

The suite must pass on a shared, busy machine (DESIGN.md §4); this is how we show it.
Each run's closing line and duration are printed; the exit status is non-zero if any
run failed. The busy loops are killed by PID at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import time


def spin() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--loops",
        type=int,
        default=os.cpu_count() or 2,
        help="busy loops to start (default: one per core)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    loops = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.loops)]
    for loop in loops:
        loop.start()
    print(f"busy.py: {args.loops} busy loops running (pids {[p.pid for p in loops]})", flush=True)
    failures = 0
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            result = subprocess.run(command, capture_output=True, text=True)
            elapsed = time.monotonic() - started
            lines = (result.stdout + result.stderr).strip().splitlines()
            closing = lines[-1] if lines else "(no output)"
            print(
                f"run {run}/{args.runs}: exit {result.returncode} in {elapsed:.0f}s: {closing}",
                flush=True,
            )
            if result.returncode != 0:
                failures += 1
                print("\n".join(lines[-60:]), flush=True)
    finally:
        for loop in loops:
            loop.kill()
            loop.join()
    print(f"busy.py: {args.runs - failures} of {args.runs} runs passed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
