"""Failover and leadership-transfer times on a local 3-node cluster.

failover: SIGKILL the leader, then time until the first SubmitJob sent after the kill
is committed (one prober thread per survivor, retrying every 2 ms). The killed node
is restarted (empty: nodes keep their state in memory) and the cluster settles
before the next kill.

transfer: TransferLeadership to the next node in turn; times the RPC's round trip
(it answers once the target has won) and until a SubmitJob on the new leader commits.

    .venv/bin/python -m bench.failover                 # 20 kills, 20 transfers
    .venv/bin/python -m bench.failover --kills 5 --transfers 0
    .venv/bin/python -m bench.failover --writers 32 --transfers 0   # under write load
    .venv/bin/python -m bench.failover --writers 32 --transfers 0 --timeline

With --timeline the nodes log JSON (times to the microsecond) and each kill is followed
by what the survivors logged about it: when they saw the leader's connection end, when
one stood, won, and was followed, and any snapshot one had to install (milliseconds
after the kill).

With --writers N, a client process keeps N closed-loop writers submitting `true` jobs
to whichever node leads (following the not-leader hints) for the whole run. The nodes
run with no practical cap on queued jobs, so that no write is refused for capacity.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import threading
import time

import grpc

from bench.common import machine_note, percentile, running_cluster
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from tests.nodeproc import Cluster, Node, wait_until

PROBE_INTERVAL = 0.002
_keys = itertools.count()


def _submit_once(stub, timeout: float = 1.0) -> bool:
    request = pb.SubmitJobRequest(command="true", idempotency_key=f"probe-{next(_keys)}")
    try:
        stub.SubmitJob(request, timeout=timeout)
        return True
    except grpc.RpcError:
        return False


def first_commit_after(nodes: list[Node], deadline: float) -> float | None:
    """Monotonic time of the first SubmitJob committed by any of `nodes` (None if
    none by `deadline`), probing each from its own thread on a fresh channel."""
    done = threading.Event()
    winners: list[float] = []
    lock = threading.Lock()

    def probe(node: Node) -> None:
        with grpc.insecure_channel(node.grpc_address) as channel:
            stub = pb_grpc.SchedulerServiceStub(channel)
            while not done.is_set() and time.monotonic() < deadline:
                if _submit_once(stub):
                    with lock:
                        winners.append(time.monotonic())
                    done.set()
                    return
                time.sleep(PROBE_INTERVAL)

    threads = [threading.Thread(target=probe, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return min(winners) if winners else None


def settle(cluster: Cluster) -> Node:
    """Wait until every node is up, agrees on one leader, takes writes there and has
    applied what the leader has committed (a node restarted empty installs the table
    and catches up first: the next kill should find a healthy cluster, not a double
    failure)."""
    leader = cluster.leader(timeout=30)
    with grpc.insecure_channel(leader.grpc_address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        wait_until(lambda: _submit_once(stub, 5), 30, "a write on the leader")

    def caught_up() -> bool:
        view = leader.get("/api/cluster").body  # the leader first, then the others
        if view["role"] != "leader":
            return False
        others = [node.get("/api/cluster").body for node in cluster.nodes.values()]
        return all(other["last_applied"] >= view["commit_index"] for other in others)

    wait_until(caught_up, 60, "every node to apply the leader's commits")
    return leader


TIMELINE_MESSAGES = (
    "Leader {leader} disconnected",
    "Starting an election",
    "Elected",
    "Following",
    "Installed a snapshot",
)


def timeline(nodes: list[Node], since: float, until: float) -> list[str]:
    """What `nodes` logged about leadership between two wall-clock times (JSON logs),
    in order, as `+<ms after since> node <id>: <message>` lines."""
    lines = []
    for node in nodes:
        for line in node.log_text().splitlines():
            if "jobsched.raft.service" not in line:  # the messages' logger: skip the rest
                continue
            try:
                event = json.loads(line)
                at, text = event["log_time"], event.get("log_format") or ""
            except (ValueError, KeyError, TypeError):
                continue
            if since <= at <= until and text.startswith(TIMELINE_MESSAGES):
                message = text.format(**{k: v for k, v in event.items() if isinstance(k, str)})
                lines.append((at, f"+{1000 * (at - since):.0f} ms node {node.node_id}: {message}"))
    return [text for _at, text in sorted(lines)]


def run_failover(cluster: Cluster, kills: int, show_timeline: bool = False) -> list[float]:
    times = []
    for n in range(kills):
        leader = settle(cluster)
        time.sleep(0.5)  # a steady state: heartbeats and writes flowing for a while
        survivors = [node for node in cluster.nodes.values() if node is not leader]
        killed_at, killed_wall = time.monotonic(), time.time()
        leader.kill()  # SIGKILL by PID, then reaped
        committed = first_commit_after(survivors, killed_at + 10)
        if committed is None:
            print(f"  kill {n + 1}: no commit within 10 s")
        else:
            times.append(committed - killed_at)
            print(
                f"  kill {n + 1}: node {leader.node_id} killed at "
                f"{time.strftime('%H:%M:%S', time.localtime(killed_wall))}"
                f".{int(killed_wall * 1000) % 1000:03d}, first commit after "
                f"{1000 * times[-1]:.0f} ms",
                flush=True,
            )
        if show_timeline:
            until = killed_wall + (times[-1] if committed is not None else 10)
            for line in timeline(survivors, killed_wall, until):
                print(f"    {line}")
        leader.start()
        leader.wait_ready(timeout=30)
    return times


def run_transfers(cluster: Cluster, transfers: int):
    round_trips, until_write = [], []
    for n in range(transfers):
        leader = settle(cluster)
        time.sleep(0.3)
        target = min(
            (node for node in cluster.nodes.values() if node is not leader),
            key=lambda node: (node.node_id - leader.node_id) % len(cluster.nodes),
        )
        started = time.monotonic()
        reply = leader.scheduler.TransferLeadership(
            pb.TransferLeadershipRequest(target_node_id=target.node_id), timeout=10
        )
        answered = time.monotonic()
        if not reply.success:
            print(f"  transfer {n + 1}: refused: {reply.message}")
            continue
        committed = first_commit_after([target], answered + 10)
        round_trips.append(answered - started)
        if committed is not None:
            until_write.append(committed - started)
        print(
            f"  transfer {n + 1}: {leader.node_id} -> {target.node_id}: RPC "
            f"{1000 * round_trips[-1]:.0f} ms, write committed after "
            f"{1000 * (committed - started) if committed else float('nan'):.0f} ms",
            flush=True,
        )
    return round_trips, until_write


def _write_forever(addresses: list[str], writers: int, counts) -> None:
    """N closed-loop writers on one grpc.aio channel per node, following the leader;
    `counts` (a shared array) gets [committed, refused]."""
    import asyncio

    async def main() -> None:
        channels = {a: grpc.aio.insecure_channel(a) for a in addresses}
        stubs = {a: pb_grpc.SchedulerServiceStub(c) for a, c in channels.items()}
        current = [addresses[0]]

        async def writer() -> None:
            request = pb.SubmitJobRequest(command="true")
            while True:
                address = current[0]
                try:
                    await stubs[address].SubmitJob(request, timeout=5)
                    counts[0] += 1
                except grpc.aio.AioRpcError as error:
                    counts[1] += 1
                    hint = (error.details() or "").partition("Try ")[2]
                    if hint in stubs:
                        current[0] = hint
                    elif current[0] == address:
                        current[0] = addresses[(addresses.index(address) + 1) % len(addresses)]
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(writer() for _ in range(writers)))

    asyncio.run(main())


def start_writers(cluster: Cluster, writers: int):
    """The writer process (spawned) and its shared counts."""
    context = multiprocessing.get_context("spawn")
    counts = context.Array("l", 2)
    addresses = [node.grpc_address for node in cluster.nodes.values()]
    process = context.Process(target=_write_forever, args=(addresses, writers, counts))
    process.start()
    return process, counts


def report(name: str, seconds: list[float]) -> None:
    values = sorted(seconds)
    print(
        f"{name}: n={len(values)} p50={1000 * percentile(values, 0.5):.0f} ms "
        f"p99={1000 * percentile(values, 0.99):.0f} ms "
        f"min={1000 * values[0] if values else float('nan'):.0f} ms "
        f"max={1000 * values[-1] if values else float('nan'):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--transfers", type=int, default=20)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--writers", type=int, default=0, help="closed-loop writers meanwhile")
    parser.add_argument(
        "--timeline", action="store_true", help="after each kill, what the survivors logged"
    )
    args = parser.parse_args()
    print(f"# 3 nodes, in memory, process executor; {args.writers} writers; {machine_note()}")
    # No cap on queued jobs: the writers' jobs pile up (they are submitted faster than
    # they run), and at the cap a probe would wait for a place in the queue, not for
    # the new leader.
    log_format = ("--log-format", "json") if args.timeline else ()
    with running_cluster(
        3, "--max-active-jobs", "1000000", *log_format, keep_logs=args.keep_logs
    ) as cluster:
        writers = start_writers(cluster, args.writers) if args.writers else None
        try:
            kills = run_failover(cluster, args.kills, args.timeline) if args.kills else []
            transfers = run_transfers(cluster, args.transfers) if args.transfers else ([], [])
        finally:
            if writers is not None:
                process, counts = writers
                process.terminate()
                process.join(timeout=10)
                print(f"# writers: {counts[0]} committed, {counts[1]} refused or failed")
    if args.kills:
        report("failover (SIGKILL leader -> first committed write)", kills)
    if args.transfers:
        report("transfer (TransferLeadership RPC round trip)", transfers[0])
        report("transfer (RPC sent -> write committed on the new leader)", transfers[1])
    print(f"# finished {machine_note()}")


if __name__ == "__main__":
    main()
