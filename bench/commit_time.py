"""Where one client's write waits: its round trip against the leader's commit time.

    .venv/bin/python -m bench.commit_time [--rounds 3] [--clients 1]

A fresh 3-node cluster with every slot busy (jobs stay pending, as in bench/compare.py's
`pending` mode) for each round; the closed-loop client (bench/closed_loop.py) writes
for --seconds while the leader's `jobsched_raft_commit_seconds` histogram (propose →
committed and applied) is read before and after. Prints, per round, the client's p50 /
p99 and the leader's mean commit time over the same writes: what the commit costs and
what the rest of a call (the client's request and answer through gRPC) costs.
"""

from __future__ import annotations

import argparse
import urllib.request

from bench.closed_loop import ClientProcess
from bench.common import machine_note, running_cluster
from bench.compare import fill_every_slot

COMMIT_METRIC = "jobsched_raft_commit_seconds"


def commit_totals(base_url: str) -> tuple[float, float]:
    """(seconds, count) of the leader's commit histogram so far."""
    text = urllib.request.urlopen(base_url + "/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith((COMMIT_METRIC + "_sum", COMMIT_METRIC + "_count")):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    return values[COMMIT_METRIC + "_sum"], values[COMMIT_METRIC + "_count"]


def one_round(args) -> dict:
    with running_cluster(3, "--worker-slots", "1") as cluster:
        leader = cluster.leader(timeout=10)
        fill_every_slot(leader.grpc_address)
        client = ClientProcess(
            "--system", "jobsched", "--address", leader.grpc_address,
            "--clients", str(args.clients), "--seconds", str(args.seconds),
        )  # fmt: skip
        try:
            base_url = f"http://127.0.0.1:{leader.http_port}"
            seconds_before, count_before = commit_totals(base_url)
            result = client.measure()
            seconds_after, count_after = commit_totals(base_url)
        finally:
            client.close()
    commits = count_after - count_before
    result["commit_ms"] = 1000 * (seconds_after - seconds_before) / max(1, commits)
    result["commits"] = commits
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"# {machine_note()}; {args.clients} client(s), {args.seconds:g} s per round")
    for number in range(1, args.rounds + 1):
        r = one_round(args)
        print(
            f"round {number}: {r['rate']:.0f} writes/s, client p50 {r['p50']:.2f} ms, "
            f"p99 {r['p99']:.2f} ms; leader propose → commit mean {r['commit_ms']:.2f} ms "
            f"over {r['commits']:.0f} entries",
            flush=True,
        )


if __name__ == "__main__":
    main()
