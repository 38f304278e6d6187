"""Fixtures that start real node processes (killed by PID in teardown)."""

import pytest

from tests.nodeproc import NodeFactory


@pytest.fixture
def nodes(tmp_path):
    factory = NodeFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.kill_all()
