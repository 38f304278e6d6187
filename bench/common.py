"""Shared pieces of the benches: a local cluster of node processes, a careful submit
client, percentiles, CPU accounting and a note of the machine the figures came from.

Run the benches from the repository root as modules (`python -m bench.cluster_submit`)
so that `tests.nodeproc`, which starts the node processes, is importable.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.identity import TlsMaterial
from jobsched.net.channels import open_channel
from tests.nodeproc import Cluster, Node, NodeFactory, child_processes
from tests.pki import Pki

RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


@contextlib.contextmanager
def running_cluster(
    size: int, *extra_args: str, keep_logs: bool = False, tls: bool = False
) -> Iterator[Cluster]:
    """`size` nodes with the process executor, up and with a leader; all of them
    stopped (by PID) on the way out. `{workdir}` in an argument becomes a temporary
    directory (removed afterwards unless `keep_logs`, or the bench failed inside: then
    its node logs are kept for a look) and `{node_id}` each node's id. With `tls` the nodes
    run with mutual TLS (certificates made in the directory) and the cluster's nodes
    carry the client certificate (`Node.credentials.tls`) a bench client presents."""
    workdir = Path(tempfile.mkdtemp(prefix="jobsched-bench-"))
    extra_args = tuple(arg.replace("{workdir}", str(workdir)) for arg in extra_args)
    credentials = None
    if tls:
        pki = Pki(workdir / "pki").nodes(*range(1, size + 1))
        extra_args += tuple(pki.node_args())
        credentials = pki.client("bench")
    factory = NodeFactory(workdir, credentials=credentials)
    try:
        cluster = Cluster(factory, size, *extra_args)
        for node in cluster.nodes.values():
            node.wait_ready(timeout=30)
        cluster.leader(timeout=10)
        yield cluster
    except BaseException:
        keep_logs = True
        raise
    finally:
        stop_nodes(factory.nodes)
        if keep_logs:
            print(f"node logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def stop_nodes(nodes: list[Node], grace: float = 20) -> None:
    """SIGTERM every live node at once (a graceful stop lets running jobs, which live
    in sessions of their own, finish); SIGKILL those still up after `grace` seconds."""
    live = [node for node in nodes if node.process is not None and node.process.poll() is None]
    for node in live:
        node.stopped_on_purpose = True
        node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for node in live:
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        node.kill()


def leader_address(cluster: Cluster, timeout: float = 10, among: list[int] | None = None) -> str:
    return cluster.leader(timeout=timeout, among=among).grpc_address


def client_tls(cluster: Cluster) -> TlsMaterial | None:
    """The client certificate a bench client presents to `cluster` (None: plaintext)."""
    credentials = next(iter(cluster.nodes.values())).credentials
    return credentials.tls if credentials is not None else None


class Submitter:
    """One client thread's view: a channel to the leader, re-pointed on a hint; mutual
    TLS with `tls` (a client certificate)."""

    def __init__(self, address: str, tls: TlsMaterial | None = None) -> None:
        self._tls = tls
        self._channels = {}
        self._stub = self._stub_for(address)

    def _stub_for(self, address: str) -> pb_grpc.SchedulerServiceStub:
        if address not in self._channels:
            self._channels[address] = open_channel(address, self._tls)
        return pb_grpc.SchedulerServiceStub(self._channels[address])

    def submit(self, request: pb.SubmitJobRequest, deadline: float) -> str:
        """SubmitJob until acknowledged (committed); follows leader hints."""
        while True:
            try:
                return self._stub.SubmitJob(request, timeout=10).job_id
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
                hint = (error.details() or "").partition("Try ")[2]
                if hint:
                    self._stub = self._stub_for(hint)
                time.sleep(0.01)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / ticks, (cutime + cstime) / ticks


def this_process_cpu_seconds() -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of this process so far, at the precision of
    getrusage (finer than /proc's clock ticks)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def total_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these live processes, with the children they reaped and those
    still running (a child reaped between two readings is counted once: its CPU moves
    from its own figure to its parent's reaped-children figure)."""
    total = sum(sum(cpu_seconds(pid)) for pid in pids)
    for child in child_processes(pids):
        try:
            total += cpu_seconds(child)[0]
        except OSError:
            continue  # ended between the two reads: its parent reaps it
    return total


def machine_note() -> str:
    """One line: date, CPUs, Python, load averages (other work shares this machine)."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · load {load}"
    )


async def serve_until_killed(port: int, register) -> None:
    """A grpc.aio server on 127.0.0.1:`port` with what `register(server)` adds; prints
    "serving" once it answers (what `serving` waits for)."""
    server = grpc.aio.server()
    register(server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


@contextlib.contextmanager
def serving(module: str, flag: str = "--serve") -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m <module> <flag> PORT` in a process of its own, once it has printed
    "serving": yields its address and process; terminated at the end."""
    from tests.nodeproc import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", module, flag, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        if server.stdout.readline().strip() != "serving":
            raise RuntimeError(f"the {module} server did not start")
        yield f"127.0.0.1:{port}", server
    finally:
        server.terminate()
        server.wait(timeout=30)


def start_profilers(out_dir: str, outputs: dict[int, str]) -> list[subprocess.Popen]:
    """py-spy on each process (GIL holders, every thread, raw collapsed stacks) into
    out_dir/<name>.txt, for `outputs` of pid -> name; for bench/profile_summary.py.
    `--nonblocking` matters: a profiler that pauses a node causes elections."""
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(out_dir, exist_ok=True)
    return [
        subprocess.Popen(
            [
                *(py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"),
                *("--threads", "--gil", "--nonblocking"),
                *("--output", os.path.join(out_dir, f"{name}.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, name in outputs.items()
    ]


def stop_profilers(profilers: list[subprocess.Popen]) -> None:
    """Stop the profilers; each writes its file as it exits."""
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        profiler.wait(timeout=60)
