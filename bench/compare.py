"""jobsched against etcd on this machine: committed writes/s, latency and CPU per write.

Both run as 3-node clusters started here, on 127.0.0.1, sharing the machine's cores
with the client: etcd 3.4 (Debian `etcd-server`, fsync on, default timing; see
bench/etcd.py) and jobsched (process executor). One closed-loop client process
(bench/closed_loop.py: N workers on one grpc.aio channel to the leader) drives both:
KV.Put of a 64-byte value on etcd, SubmitJob of `true` on jobsched. Levels and
systems are interleaved, and the whole sequence runs --rounds times (default twice).

Modes of jobsched (etcd is the same in every mode):
  run      `true` jobs that really run (4 slots per node)
  pending  every slot busy first (--worker-slots 1, three `sleep 600` jobs), so the
           measured jobs stay pending: the submit path alone
  durable  pending, and every node has a --data-dir (SQLite, fsync per commit)
  batch    pending, SubmitJobs of --batch-size jobs per call; figures are jobs/s
  floor    no cluster: one process of bench/grpc_floor.py whose grpc.aio server (on a
           uvloop loop, like a node's) answers each SubmitJob after a hop to a reactor
           thread through the node's bridge, and does nothing else; the most a node
           built this way could answer here, beside etcd's rate of the same minutes

    .venv/bin/python -m bench.compare                        # run, pending, durable
    .venv/bin/python -m bench.compare --modes batch --clients 8
    .venv/bin/python -m bench.compare --modes floor,pending --clients 32
    .venv/bin/python -m bench.compare --quick                # 1 round, 2 s per level

CPU per write is the CPU time of every server process (each node or member, plus the
job processes a node reaped) during the measured seconds, per committed write; a
jobsched row is followed by that CPU split into the leader's and each follower's, and
by the appends each follower received a second and the entries each carried. Every
row carries the load average: other work shares this machine. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import grpc

from bench import etcd
from bench.closed_loop import ClientProcess
from bench.common import (
    machine_note,
    running_cluster,
    serving,
    start_profilers,
    stop_profilers,
    total_cpu_seconds,
)
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from tests.nodeproc import REPO_ROOT, TWISTD, Node, metric_samples, wait_until

MODES = ("run", "pending", "durable", "batch", "floor")
BUSY_JOBS = 3
BUSY_COMMAND = "sleep 600"


def _node_options(mode: str, large_cap: bool) -> list[str]:
    options = []
    if mode != "run":
        options += ["--worker-slots", "1"]
    if mode == "durable":
        options += ["--data-dir", "{workdir}/data{node_id}"]
    if large_cap:
        options += ["--max-active-jobs", "1000000"]
    return options


def _supports(option: str) -> bool:
    """Whether this jobsched's nodes take `option` (older code, for "before" figures,
    may not)."""
    help_text = subprocess.run(
        [TWISTD, "jobsched", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    ).stdout
    return option in help_text


def fill_every_slot(address: str) -> list[str]:
    """Submit one long job per slot and wait until all of them run."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        ids = [
            stub.SubmitJob(pb.SubmitJobRequest(command=BUSY_COMMAND), timeout=10).job_id
            for _ in range(BUSY_JOBS)
        ]
        query = pb.ListJobsRequest(page_size=1, status_filter=pb.JOB_STATUS_RUNNING)
        wait_until(
            lambda: stub.ListJobs(query, timeout=5).total_count == BUSY_JOBS,
            30,
            "every slot to be busy",
        )
    return ids


def _cancel(address: str, job_ids: list[str]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        for job_id in job_ids:
            with contextlib.suppress(grpc.RpcError):
                stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10)


def _appends_received(follower: Node) -> tuple[float, float]:
    """(AppendEntries answered, entries appended) by `follower` so far, from /metrics."""
    samples = metric_samples(follower.get("/metrics").body)

    def total(name: str) -> float:
        return sum(value for key, value in samples.items() if key.partition("{")[0] == name)

    return (
        total("jobsched_raft_appends_received_total"),
        total("jobsched_raft_entries_appended_total"),
    )


def _measure(
    args, system: str, address: str, pids: list[int], clients: int, batch=0, followers=()
) -> dict:
    """One closed-loop run against `address`; figures plus the servers' CPU, and what
    the `followers` received (the entries each append carried)."""
    client = ClientProcess(
        "--system", system, "--address", address, "--clients", str(clients),
        "--warmup", str(args.warmup), "--seconds", str(args.seconds),
        "--stubs", args.stub_dir, "--batch", str(batch),
    )  # fmt: skip
    profilers = []
    try:
        if args.py_spy and system == "jobsched":
            label = f"{clients}c-{len(args.profiled)}"
            names = {pid: f"follower{n}-{label}" for n, pid in enumerate(pids)}
            names[pids[0]] = f"leader-{label}"  # the first pid is the leader's
            profilers = start_profilers(args.py_spy, names)
            args.profiled.append(clients)
        note = machine_note()
        cpu_before = [total_cpu_seconds([pid]) for pid in pids]
        appends_before = [_appends_received(follower) for follower in followers]
        result = client.measure()
        appends = [
            (after[0] - before[0], after[1] - before[1])
            for before, after in zip(
                appends_before, (_appends_received(f) for f in followers), strict=True
            )
        ]
        cpu_each = [
            total_cpu_seconds([pid]) - before for pid, before in zip(pids, cpu_before, strict=True)
        ]
    finally:
        stop_profilers(profilers)
        client.close()
    per_write = 1000 / max(1, result["writes"])
    result["cpu_ms"] = per_write * sum(cpu_each)
    result["cpu_ms_each"] = [per_write * cpu for cpu in cpu_each]
    result["appends"] = appends
    result["note"] = note
    return result


@contextlib.contextmanager
def _jobsched(args, mode: str) -> Iterator[tuple[str, list[Node]]]:
    """A fresh 3-node cluster for one measurement (pending jobs pile up otherwise): the
    leader's address and the nodes, the leader's first."""
    with running_cluster(3, *_node_options(mode, args.large_cap)) as cluster:
        address = cluster.leader(timeout=10).grpc_address
        busy = fill_every_slot(address) if mode != "run" else []
        nodes = sorted(cluster.nodes.values(), key=lambda node: node.grpc_address != address)
        try:
            yield address, nodes
        finally:
            _cancel(cluster.leader(timeout=10).grpc_address, busy)


def _row(label: str, r: dict, by_node: bool = False) -> str:
    """One run's figures; with `by_node`, a second line: the CPU per write of the
    leader and of each follower (jobsched's pids are the leader's first), and the
    appends each follower received."""
    errors = sum(r["errors"].values())
    row = (
        f"{label:<22} {r['rate']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
        f"{r['cpu_ms']:>8.3f} {errors:>5}   {r['note']}"
    )
    if by_node:
        leader, *followers = (f"{ms:.3f}" for ms in r["cpu_ms_each"])
        row += f"\n{'':<22} CPU ms/w: leader {leader}, followers {', '.join(followers)}"
        received = ", ".join(
            f"{appends / r['elapsed']:.0f}/s of {entries / max(1, appends):.1f} entries"
            for appends, entries in r["appends"]
        )
        row += f"; followers' appends: {received}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32,64", help="comma-separated levels")
    parser.add_argument("--modes", default="run,pending,durable", help=f"of {','.join(MODES)}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s per level")
    parser.add_argument(
        "--py-spy", metavar="DIR", default="", help="profile jobsched's nodes into DIR"
    )
    args = parser.parse_args()
    args.profiled = []
    if args.quick:
        args.rounds, args.seconds = 1, 2.0
    levels = [int(level) for level in args.clients.split(",")]
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    reason = etcd.missing()
    if reason:
        sys.exit(f"bench.compare: {reason}")
    args.large_cap = _supports("--max-active-jobs")
    with tempfile.TemporaryDirectory(prefix="jobsched-etcd-stubs-") as stub_dir:
        args.stub_dir = stub_dir
        etcd.generate_stubs(stub_dir)
        results = _run_all(args, levels, modes)
    _summary(results, levels, modes)


def _run_all(args, levels: list[int], modes: list[str]) -> dict:
    print(f"# {machine_note()}; {args.seconds:g} s per run after {args.warmup:g} s warm-up")
    print(
        f"{'system mode clients':<22} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU ms/w':>8} {'err':>5}   when / load"
    )
    results: dict = {}
    with etcd.running_etcd(args.stub_dir) as members:
        for round_number in range(1, args.rounds + 1):
            for clients in levels:
                address = members.leader_address()
                r = _measure(args, "etcd", address, members.pids(), clients)
                results[("etcd", "", clients, round_number)] = r
                print(_row(f"etcd {clients}c r{round_number}", r), flush=True)
                for mode in modes:
                    if mode == "floor":
                        with serving("bench.grpc_floor", "--serve-hopping") as (address, server):
                            r = _measure(args, "jobsched", address, [server.pid], clients)
                        results[("jobsched", mode, clients, round_number)] = r
                        print(_row(f"floor {clients}c r{round_number}", r), flush=True)
                        continue
                    batch = args.batch_size if mode == "batch" else 0
                    with _jobsched(args, mode) as (leader, nodes):
                        pids = [node.process.pid for node in nodes]
                        r = _measure(args, "jobsched", leader, pids, clients, batch, nodes[1:])
                    results[("jobsched", mode, clients, round_number)] = r
                    label = f"jobsched {mode} {clients}c r{round_number}"
                    print(_row(label, r, by_node=True), flush=True)
                    for error, count in sorted(r["errors"].items(), key=lambda e: -e[1])[:3]:
                        print(f"    {count} x {error}")
    return results


def _summary(results: dict, levels: list[int], modes: list[str]) -> None:
    """Per level and mode: each round's jobsched/etcd ratio of writes/s, p50 and CPU;
    with both `pending` and `durable`, what `--data-dir` keeps of the in-memory rate."""
    print("\n# ratios jobsched / etcd, per round (writes/s, p50, CPU ms per write)")
    rounds = sorted({key[3] for key in results})
    for mode in modes:
        for clients in levels:
            cells = []
            for n in rounds:
                e, j = results[("etcd", "", clients, n)], results[("jobsched", mode, clients, n)]
                cells.append(
                    f"{j['rate']:.0f}/{e['rate']:.0f} = {j['rate'] / e['rate']:.2f}x, "
                    f"p50 {j['p50']:.2f}/{e['p50']:.2f} ms, "
                    f"CPU {j['cpu_ms']:.2f}/{e['cpu_ms']:.2f} ms"
                )
            print(f"{mode:<8} {clients:>3}c  " + " | ".join(cells))
    if {"pending", "durable"} <= set(modes):
        print("\n# --data-dir against memory, per round (durable / pending writes/s)")
        for clients in levels:
            cells = []
            for n in rounds:
                d, p = (
                    results[("jobsched", m, clients, n)]["rate"] for m in ("durable", "pending")
                )
                cells.append(f"{d:.0f}/{p:.0f} = {100 * d / p:.0f} %")
            print(f"durable  {clients:>3}c  " + " | ".join(cells))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench.compare: terminated"))
    main()
