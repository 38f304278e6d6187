"""A local 3-member etcd cluster for bench/compare.py, and its gRPC stubs.

etcd is Debian's `etcd-server` (3.4; `apt-get install etcd-server`), run with its
defaults: fsync on every commit, heartbeat 100 ms, election 1,000 ms. The stubs are
generated at run time, into a temporary directory, from the `rpc.proto` that Debian's
`golang-etcd-server-dev` ships (with the gogoproto and googleapis files it depends
on); none of etcd's files is copied into this repository.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from tests.nodeproc import free_port

GOCODE = Path("/usr/share/gocode/src")
INCLUDES = (
    GOCODE / "go.etcd.io",
    GOCODE / "github.com/gogo/protobuf",
    GOCODE / "github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis",
)
PROTOS = (
    "etcd/etcdserver/etcdserverpb/rpc.proto",
    "etcd/mvcc/mvccpb/kv.proto",
    "etcd/auth/authpb/auth.proto",
    "gogoproto/gogo.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
)
PACKAGES = "etcd-server golang-etcd-server-dev"


def missing() -> str | None:
    """Why etcd cannot be benchmarked here, or None."""
    if shutil.which("etcd") is None:
        return f"no etcd binary (apt-get install {PACKAGES})"
    if not (INCLUDES[0] / PROTOS[0]).exists():
        return f"no etcd rpc.proto (apt-get install {PACKAGES})"
    return None


def generate_stubs(out_dir: str) -> None:
    """Python modules of etcd's rpc.proto (and what it imports) into `out_dir`."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", *(f"-I{path}" for path in (*INCLUDES, well_known))]
    args += [f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on etcd's rpc.proto")


def import_stubs(stub_dir: str):
    """(rpc_pb2, rpc_pb2_grpc) from a directory filled by `generate_stubs`."""
    if stub_dir not in sys.path:
        sys.path.append(stub_dir)
    package = "etcd.etcdserver.etcdserverpb"
    return (
        importlib.import_module(f"{package}.rpc_pb2"),
        importlib.import_module(f"{package}.rpc_pb2_grpc"),
    )


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"


class EtcdCluster:
    """Three etcd members on 127.0.0.1, each in its own data directory."""

    def __init__(self, workdir: Path, stub_dir: str, size: int = 3) -> None:
        self._workdir = workdir
        self.members = [Member(f"e{i}", free_port(), free_port()) for i in range(1, size + 1)]
        self._pb, self._pb_grpc = import_stubs(stub_dir)

    def start(self) -> None:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for member in self.members:
            log = open(self._workdir / f"{member.name}.log", "ab")  # noqa: SIM115
            with log:
                member.process = subprocess.Popen(
                    [
                        "etcd",
                        "--name",
                        member.name,
                        "--data-dir",
                        str(self._workdir / member.name),
                        "--listen-client-urls",
                        f"http://{member.address}",
                        "--advertise-client-urls",
                        f"http://{member.address}",
                        "--listen-peer-urls",
                        f"http://127.0.0.1:{member.peer_port}",
                        "--initial-advertise-peer-urls",
                        f"http://127.0.0.1:{member.peer_port}",
                        "--initial-cluster",
                        initial,
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        f"bench-{os.getpid()}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

    def pids(self) -> list[int]:
        return [m.process.pid for m in self.members if m.process is not None]

    def leader_address(self, timeout: float = 30) -> str:
        """The client address of the member every member names as leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders, ids = set(), {}
            for member in self.members:
                try:
                    with grpc.insecure_channel(member.address) as channel:
                        stub = self._pb_grpc.MaintenanceStub(channel)
                        status = stub.Status(self._pb.StatusRequest(), timeout=1)
                except grpc.RpcError:
                    break
                leaders.add(status.leader)
                ids[status.header.member_id] = member
            else:
                if len(leaders) == 1 and (leader := leaders.pop()) in ids:
                    return ids[leader].address
            time.sleep(0.1)
        raise AssertionError("etcd: no agreed leader in time")

    def stop(self) -> None:
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            if member.process is None:
                continue
            try:
                member.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait(timeout=10)


@contextlib.contextmanager
def running_etcd(stub_dir: str) -> Iterator[EtcdCluster]:
    """A started 3-member cluster with a leader; stopped and removed on the way out."""
    workdir = Path(tempfile.mkdtemp(prefix="jobsched-etcd-"))
    cluster = EtcdCluster(workdir, stub_dir)
    try:
        cluster.start()
        cluster.leader_address()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
