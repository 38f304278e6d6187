"""The Docker engine the tests run jobs on, and the local image they use.

A fresh machine has no engine and cannot pull images, so the tests install one
(`python tests/docker_engine.py install`), start `dockerd` if nothing answers on the
socket, and build a small busybox image locally. Whatever is started here is stopped
here, by PID, and only if it was started here (at the exit of the test process).

Docker test classes call `prepared_env()` (prepared once per process, then cached): it
skips the test with the reason when no engine can be had, or fails it in CI, where the
Docker tests must run.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import unittest
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import docker
import docker.errors

from tests.host_packages import apt_install, running_in_ci

TEST_IMAGE = "jobsched-test/busybox:latest"
BUSYBOX = Path("/bin/busybox")
STATE_DIR = Path(__file__).resolve().parent.parent / ".test-docker"
DOCKERD_ARGS = ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"]
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
POLL_S = 0.2


class EngineUnavailable(Exception):
    """The engine (or the test image) cannot be made ready; str() is the reason."""


@dataclass
class EngineHandle:
    """The engine in use; `process` is the dockerd we started, None if it was running."""

    process: subprocess.Popen | None
    log_path: Path | None = None

    @property
    def started_here(self) -> bool:
        return self.process is not None


class DockerTestEnv(NamedTuple):
    """A ready engine and the name of the test image on it."""

    handle: EngineHandle
    image: str


def engine_answers() -> bool:
    """True if an engine answers a ping on the default socket (DOCKER_HOST honoured)."""
    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:  # any transport error means "not answering"
        return False
    finally:
        client.close()


def ensure_engine() -> EngineHandle:
    """Return a handle on a running engine, starting `dockerd` only if none answers."""
    if engine_answers():
        return EngineHandle(process=None)
    if shutil.which("dockerd") is None:
        raise EngineUnavailable(
            "no Docker engine answers and dockerd is not installed "
            "(run `python tests/docker_engine.py install` as root)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine answers and starting dockerd needs root")
    STATE_DIR.mkdir(exist_ok=True)
    log_path = STATE_DIR / "dockerd.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            DOCKERD_ARGS, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    handle = EngineHandle(process=process, log_path=log_path)
    deadline = time.monotonic() + START_DEADLINE_S
    while not engine_answers():
        if process.poll() is not None:
            raise EngineUnavailable(
                f"dockerd exited with {process.returncode} while starting; "
                f"log {log_path}: {_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop(handle)
            raise EngineUnavailable(
                f"dockerd did not answer within {START_DEADLINE_S:.0f}s; "
                f"log {log_path}: {_tail(log_path)}"
            )
        time.sleep(POLL_S)
    return handle


def ensure_test_image(name: str = TEST_IMAGE) -> str:
    """Import `name` from the host's static busybox unless the engine already has it.

    The image holds /bin/busybox, a link per applet and a /tmp of mode 1777 (a tmpfs
    mounted over /tmp keeps the image directory's mode, so non-root jobs need it).
    """
    client = docker.from_env(timeout=60)
    try:
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            pass
        if not BUSYBOX.is_file():
            raise EngineUnavailable(
                f"{BUSYBOX} is missing (run `python tests/docker_engine.py install`)"
            )
        repository, _, tag = name.rpartition(":")
        client.api.import_image_from_data(_busybox_rootfs_tar(), repository=repository, tag=tag)
        client.images.get(name)
        return name
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"cannot build test image {name}: {exc}") from exc
    finally:
        client.close()


def stop(handle: EngineHandle) -> None:
    """Stop dockerd if this module started it: SIGTERM, then SIGKILL after a deadline."""
    process = handle.process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_DEADLINE_S)


_prepared: DockerTestEnv | None = None
_unavailable: str | None = None
_prepare_lock = threading.Lock()


def prepared_env() -> DockerTestEnv:
    """The engine and the test image, prepared on the first call of the process.

    Raises unittest.SkipTest(reason) when they cannot be had, or an AssertionError with
    the reason when CI is set (Docker tests must run in CI). Blocks while it prepares:
    call it in a thread from the reactor. A dockerd started here is stopped at exit.
    """
    global _prepared, _unavailable
    with _prepare_lock:
        if _prepared is None and _unavailable is None:
            try:
                _prepared = _prepare()
            except EngineUnavailable as exc:
                _unavailable = str(exc)
    if _prepared is not None:
        return _prepared
    if running_in_ci():
        raise AssertionError(f"Docker tests cannot run in CI: {_unavailable}")
    raise unittest.SkipTest(f"no Docker engine: {_unavailable}")


def _prepare() -> DockerTestEnv:
    handle = ensure_engine()
    if handle.started_here:
        atexit.register(stop, handle)
    return DockerTestEnv(handle, ensure_test_image())


def containers_named(client: docker.DockerClient, name: str) -> list:
    """Every container (running or not) named exactly `name`. Sparse: the listing does
    not inspect each container, so one being removed meanwhile cannot make it fail;
    `.status` works, the full `.attrs` need `client.containers.get`."""
    return client.containers.list(all=True, sparse=True, filters={"name": f"^/{name}$"})


def install() -> int:
    """apt-get install the engine and busybox when either is missing; return the exit code."""
    if shutil.which("dockerd") and BUSYBOX.is_file():
        print("docker.io and busybox-static are already installed")
        return 0
    return apt_install("docker.io", "busybox-static")


def _busybox_rootfs_tar() -> bytes:
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True, timeout=30
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(_dir_entry("bin", 0o755))
        tar.addfile(_dir_entry("tmp", 0o1777))
        busybox = tar.gettarinfo(str(BUSYBOX), arcname="bin/busybox")
        busybox.uid = busybox.gid = 0
        busybox.uname = busybox.gname = "root"
        with open(BUSYBOX, "rb") as binary:
            tar.addfile(busybox, binary)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                link.mode = 0o777
                tar.addfile(link)
    return buffer.getvalue()


def _dir_entry(name: str, mode: int) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type = tarfile.DIRTYPE
    entry.mode = mode
    return entry


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(f"usage: {sys.argv[0]} install")
    sys.exit(install())
