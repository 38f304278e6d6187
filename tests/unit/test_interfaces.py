"""The node's parts that no other test module builds provide their interfaces."""

from twisted.internet import task
from zope.interface.verify import verifyObject

from jobsched.interfaces import IHeartbeatSender, IRaftTransport, IWebApp
from jobsched.raft.transport import GrpcTransport
from jobsched.worker.heartbeat import HeartbeatSender
from tests.unit.test_cluster_api import build


def test_grpc_transport_provides_iraft_transport():
    transport = GrpcTransport({2: "127.0.0.1:1"}, task.Clock())
    assert verifyObject(IRaftTransport, transport)
    transport.close()


def test_rest_api_provides_iwebapp():
    from jobsched.api.rest import RestApi  # imports klein: only inside the test

    clock = task.Clock()
    _raft, _table, api = build(clock)
    rest = RestApi(api)
    assert verifyObject(IWebApp, rest)
    assert rest.resource() is not None


def test_heartbeat_sender_provides_iheartbeat_sender():
    clock = task.Clock()
    raft, _table, _api = build(clock)
    sender = HeartbeatSender(
        2, raft, worker=None, leader=None, is_draining=lambda: False, clock=clock, worker_expiry=5.0
    )
    assert verifyObject(IHeartbeatSender, sender)
