"""Fixtures shared by every test layer.

Nothing here may install a reactor at import time (no klein): pytest-twisted does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import docker_engine as engine


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_unavailable(reason: str) -> None:
    """Docker tests must run in CI: fail there, skip (with the reason) elsewhere."""
    if running_in_ci():
        pytest.fail(f"Docker tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[engine.DockerTestEnv]:
    """A running engine and the local test image; dockerd is stopped at the end of
    the session only if this fixture started it."""
    try:
        handle = engine.ensure_engine()
    except engine.EngineUnavailable as exc:
        docker_unavailable(str(exc))
    try:
        image = engine.ensure_test_image()
    except engine.EngineUnavailable as exc:
        engine.stop(handle)
        docker_unavailable(str(exc))
    try:
        yield engine.DockerTestEnv(handle, image)
    finally:
        engine.stop(handle)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the Raft simulation suite (unit/test_simulation.py)."""
    group = parser.getgroup("simulation")
    group.addoption(
        "--seed",
        type=int,
        default=None,
        help="run only this simulation seed (replays a reported failure)",
    )
    group.addoption(
        "--sim-seeds", type=int, default=500, help="how many simulation seeds to run (default 500)"
    )
    group.addoption(
        "--sim-steps", type=int, default=2000, help="steps per simulation seed (default 2000)"
    )
