"""The node's parts that no other test module builds provide their interfaces."""

from twisted.internet import task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched.interfaces import IHeartbeatSender, IPeerClient, IRaftTransport, IWebApp
from jobsched.net.channels import Wire
from jobsched.net.leader import LeaderClient
from jobsched.net.peers import PeerClient
from jobsched.raft.transport import GrpcTransport
from jobsched.routing import Router
from jobsched.worker.heartbeat import HeartbeatSender
from tests.unit.test_cluster_api import build


class ProvidedInterfacesTests(unittest.TestCase):
    """Each part verifies against the interface the node wires it in by."""

    def test_grpc_transport_provides_iraft_transport(self):
        transport = GrpcTransport({2: "127.0.0.1:1"}, Wire(), task.Clock())
        self.addCleanup(transport.close)
        self.assertTrue(verifyObject(IRaftTransport, transport))

    def test_peer_client_provides_ipeer_client(self):
        peers = PeerClient({2: "127.0.0.1:1"}, Wire(), task.Clock())
        self.addCleanup(peers.close)
        self.assertTrue(verifyObject(IPeerClient, peers))
        self.assertTrue(peers.knows(2))
        self.assertFalse(peers.knows(3))

    def test_rest_api_provides_iwebapp(self):
        from jobsched.api.rest import RestApi  # imports klein: only inside the test

        clock = task.Clock()
        node = build(clock)
        leader = LeaderClient(lambda: None, Wire(), clock)
        self.addCleanup(leader.close)
        rest = RestApi(node.api, Router(node.api, leader))
        self.assertTrue(verifyObject(IWebApp, rest))
        self.assertIsNotNone(rest.resource())

    def test_heartbeat_sender_provides_iheartbeat_sender(self):
        clock = task.Clock()
        node = build(clock)
        sender = HeartbeatSender(
            2,
            node.raft,
            worker=None,
            fence=None,
            router=None,
            is_draining=lambda: False,
            clock=clock,
            worker_expiry=5.0,
        )
        self.assertTrue(verifyObject(IHeartbeatSender, sender))
