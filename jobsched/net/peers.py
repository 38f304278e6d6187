"""Calls from this node to another member of the cluster by node id (for reads that
only the node running a job can answer, such as its live output).

Channels are opened by the `Wire`, one per peer, on first use. A call's failure comes
back as `CallFailed` (net/outbound.py): the caller decides what an unreachable peer
means for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from twisted.internet import defer
from zope.interface import implementer

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.interfaces import IPeerClient
from jobsched.net.channels import Wire
from jobsched.net.outbound import CallFailed, call_deferred


@implementer(IPeerClient)
class PeerClient:
    """InternalService calls to the peers of `addresses` (node id → `host:port`)."""

    def __init__(self, addresses: Mapping[int, str], wire: Wire, reactor) -> None:
        self._addresses = dict(addresses)
        self._wire = wire
        self._reactor = reactor
        self._channels: dict[int, grpc.Channel] = {}

    def knows(self, node_id: int) -> bool:
        return node_id in self._addresses

    def internal(self, node_id: int, method: str, request, timeout: float) -> defer.Deferred:
        """Call InternalService.`method` on peer `node_id`."""
        address = self._addresses.get(node_id)
        if address is None:
            return defer.fail(CallFailed(grpc.StatusCode.UNAVAILABLE, f"unknown node {node_id}"))
        channel = self._channels.get(node_id)
        if channel is None:
            channel = self._channels[node_id] = self._wire.open_channel(address)
        stub = pb_grpc.InternalServiceStub(channel)
        return call_deferred(self._reactor, getattr(stub, method), request, timeout)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
