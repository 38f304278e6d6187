"""Where a node's time goes, from py-spy's raw (collapsed) stacks.

    .venv/bin/python -m bench.compare --modes pending --clients 32 --rounds 1 --py-spy DIR
    .venv/bin/python -m bench.profile_summary DIR/leader-32c-0.txt [more files...]

Each sample (a thread holding the GIL, with `--gil`) is put in the category of its
innermost frame that has one (a protobuf decode inside the job table counts as
protobuf), else "other"; the table shows each category's share of the samples, then
the functions with the most samples of their own.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

# (category, pattern over "function (file:line)"), checked for each frame from the leaf
RULES = [
    # asyncio's loop runs a callback from Handle._run; uvloop's, in C, from its
    # run_forever, which py-spy shows as the loop thread's own frame
    (
        "grpc.aio (C code run by loop callbacks)",
        r"^Handle\._run \(asyncio/events\.py|^EventLoopThread\._run \(jobsched/net/loop\.py",
    ),
    ("protobuf", r"google/protobuf|_pb2\.py|\(<frozen .*message"),
    ("metrics", r"prometheus_client/"),
    (
        "thread hand-offs",
        r"\((?:threading|queue)\.py|concurrent/futures|callFromThread|call_soon_threadsafe"
        r"|jobsched/net/bridge\.py|_UnixWaker|_SocketWaker|_ThreadedWaker|wakeUp",
    ),
    ("grpcio", r"grpc/"),
    ("job processes", r"twisted/internet/(?:process|_baseprocess)\.py|jobsched/worker/process"),
    ("JobTable", r"jobsched/jobs/"),
    ("Raft core", r"jobsched/raft/(?:core|log)\.py"),
    ("Raft service", r"jobsched/raft/"),
    ("dispatcher", r"jobsched/(?:dispatch|scheduler|registry)\.py"),
    ("worker", r"jobsched/worker/"),
    ("event hub", r"jobsched/api/event_hub\.py"),
    ("API", r"jobsched/"),
    ("asyncio", r"asyncio/"),
    ("reactor", r"twisted/"),
]
NOT_HAND_OFFS = re.compile(r"Thread\.(?:run|_bootstrap|_bootstrap_inner) \(threading")
_COMPILED = [(name, re.compile(pattern)) for name, pattern in RULES]


def categorize(frames: list[str]) -> str:
    if frames and _COMPILED[0][1].search(frames[-1]):
        return _COMPILED[0][0]
    for frame in reversed(frames):
        if NOT_HAND_OFFS.search(frame):
            continue
        for name, pattern in _COMPILED:
            if pattern.search(frame):
                return name
    return "other"


def read_samples(path: str):
    """(thread name, frames leaf last, count) per line of a py-spy raw file."""
    with open(path) as file:
        for line in file:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack:
                thread, *frames = stack.split(";")
                yield thread.partition(": ")[2] or thread, frames, int(count)


def summarize(path: str, top: int) -> str:
    categories: Counter = Counter()
    own: Counter = Counter()
    threads: Counter = Counter()
    total = 0
    for thread, frames, count in read_samples(path):
        total += count
        threads[re.sub(r"[-_]\d+$", "-N", thread)] += count
        categories[categorize(frames)] += count
        if frames:
            own[re.sub(r":\d+\)$", ")", frames[-1])] += count
    lines = [f"# {path}: {total} samples"]
    lines += [f"{100 * n / total:5.1f} %  {name}" for name, n in categories.most_common()]
    lines.append("-- by thread")
    lines += [f"{100 * n / total:5.1f} %  {name}" for name, n in threads.most_common()]
    lines.append(f"-- top {top} functions by own samples")
    lines += [f"{100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for path in args.files:
        print(summarize(path, args.top))
        print()


if __name__ == "__main__":
    main()
