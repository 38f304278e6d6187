"""The event hub behind GET /api/events, on a real node alone (Raft, job table,
ClusterAPI, router) driven by a Clock; each stream writes to a fake request.

What a client reads: `job` events once their batch is applied, ids = the applied
index; `cluster` on connect and when it changes; resume from the ring with
Last-Event-ID (>= that id) or `reset`; bounds on streams and on slow readers.
"""

import json

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched import errors
from jobsched.api import sse
from jobsched.api.event_hub import KEEPALIVE_SECONDS, EventHub
from jobsched.app import SubmitRequest
from jobsched.interfaces import IEventHub
from jobsched.routing import Router
from tests.unit.test_cluster_api import build, committed, elected
from tests.unit.test_routing import FakeLeaderClient


class FakeRequest:
    """The parts of twisted.web's Request a stream uses."""

    def __init__(self):
        self.written = b""
        self.producer = None
        self.lost = False
        self.finished = defer.Deferred()

    def notifyFinish(self):
        return self.finished

    def registerProducer(self, producer, streaming):
        assert streaming
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        assert not self.lost, "written after the connection was closed"
        self.written += data

    def loseConnection(self):
        self.lost = True

    def events(self):
        """[(kind, id, data)] of every complete event written so far."""
        found = []
        for block in self.written.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                event_id = int(fields["id"]) if "id" in fields else None
                found.append((fields["event"], event_id, json.loads(fields["data"])))
        return found

    def kinds(self):
        return [kind for kind, _id, _data in self.events()]


class HubTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.node = build(self.clock)
        elected(self.clock, self.node.raft)
        self.addCleanup(self.node.raft.stopService)
        self.router = Router(self.node.api, FakeLeaderClient())
        self.hub = self.make_hub()

    def make_hub(self, **bounds):
        hub = EventHub(
            self.node.table, self.node.raft, self.node.api, self.router, self.clock, **bounds
        )
        hub.startService()
        self.addCleanup(hub.stopService)
        return hub

    def connect(self, last_event_id=None, hub=None):
        request = FakeRequest()
        done = (hub or self.hub).open(request, last_event_id)
        return request, done

    def submit(self, command="echo hi"):
        job = committed(self.clock, self.node.api.submit(SubmitRequest(command)))
        return job.job_id

    def applied(self):
        return self.node.raft.status().last_applied


class StreamContentTests(HubTestCase):
    def test_the_hub_provides_its_interface(self):
        self.assertTrue(verifyObject(IEventHub, self.hub))

    def test_a_stream_opens_with_the_cluster_state(self):
        request, _done = self.connect()
        self.assertTrue(request.written.startswith(b"retry: 2000\n\n"))
        [(kind, event_id, state)] = request.events()
        self.assertEqual((kind, event_id), ("cluster", self.applied()))
        self.assertEqual((state["node_id"], state["role"], state["leader_id"]), (1, "leader", 1))
        self.assertEqual([node["node_id"] for node in state["nodes"]], [1])
        self.assertEqual(state["nodes"][0]["draining"], False)
        self.assertEqual(state["jobs"]["pending"], 0)

    def test_job_changes_arrive_with_the_index_that_applied_them(self):
        request, _done = self.connect()
        job_id = self.submit()
        [(kind, event_id, job)] = [e for e in request.events() if e[0] == "job"]
        self.assertEqual((kind, event_id), ("job", self.applied()))
        self.assertEqual((job["id"], job["status"], job["command"]), (job_id, "pending", "echo hi"))
        self.assertIn("created_at", job)

    def test_changes_of_one_batch_are_held_until_the_batch_is_applied(self):
        request, _done = self.connect()
        self.node.table.add_listener(
            lambda event, job: self.assertNotIn(b"event: job", request.written)
        )
        self.submit()
        self.assertIn(b"event: job", request.written)

    def test_cluster_changes_are_sent_once_and_only_when_changed(self):
        request, _done = self.connect()
        self.clock.advance(5)
        self.assertEqual(request.kinds(), ["cluster"])
        self.submit()
        self.clock.pump([1, 1])
        clusters = [data for kind, _id, data in request.events() if kind == "cluster"]
        self.assertEqual(clusters[-1]["jobs"]["pending"], 1)
        self.assertEqual(clusters[-1]["commit_index"], self.applied())
        self.assertEqual(clusters[-1]["nodes"][0]["match_index"], self.applied())
        self.clock.pump([1] * 5)
        self.assertEqual(request.kinds().count("cluster"), len(clusters))

    def test_draining_shows_at_once(self):
        request, _done = self.connect()
        self.node.drain_flag.active = True
        self.clock.advance(1)
        state = [data for kind, _id, data in request.events() if kind == "cluster"][-1]
        self.assertEqual(state["nodes"][0]["draining"], True)

    def test_this_nodes_own_view_serves_when_the_leaders_cannot_be_had(self):
        self.router.cluster_status = lambda: defer.fail(errors.NoLeader())
        request, _done = self.connect()
        [(_kind, _id, state)] = request.events()
        self.assertEqual(state["nodes"][0]["is_alive"], True)

    def test_a_keepalive_keeps_quiet_streams_open(self):
        request, _done = self.connect()
        self.clock.pump([1] * int(KEEPALIVE_SECONDS - 1))
        self.assertNotIn(sse.KEEPALIVE, request.written)
        self.clock.pump([1, 1])
        self.assertIn(sse.KEEPALIVE, request.written)


class ResumeTests(HubTestCase):
    def test_last_event_id_replays_every_event_from_that_id_on(self):
        first = self.submit("echo one")
        middle = self.applied()
        second = self.submit("echo two")
        request, _done = self.connect(last_event_id=middle)
        jobs = [
            (event_id, data["id"]) for kind, event_id, data in request.events() if kind == "job"
        ]
        # the events of index `middle` again (one may have been cut off), then the rest
        self.assertEqual(jobs[0], (middle, first))
        self.assertEqual({job_id for _id, job_id in jobs}, {first, second})
        self.assertTrue(all(event_id >= middle for event_id, _job in jobs))
        self.assertEqual(request.kinds()[-1], "cluster")

    def test_ids_never_go_back_within_a_stream(self):
        request, _done = self.connect(last_event_id=0)
        for n in range(3):
            self.submit(f"echo {n}")
            self.clock.advance(0.5)
        ids = [event_id for _kind, event_id, _data in request.events() if event_id is not None]
        self.assertEqual(ids, sorted(ids))

    def test_a_position_the_ring_no_longer_holds_gets_a_reset(self):
        hub = self.make_hub(ring_events=2)
        early = self.applied()
        for n in range(3):
            self.submit(f"echo {n}")
        request, _done = self.connect(last_event_id=early, hub=hub)
        self.assertEqual(request.kinds(), ["reset", "cluster"])
        request, _done = self.connect(last_event_id=self.applied(), hub=hub)
        self.assertEqual(request.kinds(), ["job", "cluster"])

    def test_a_position_ahead_of_this_node_gets_a_reset(self):
        request, _done = self.connect(last_event_id=self.applied() + 1)
        self.assertEqual(request.kinds(), ["reset", "cluster"])

    def test_an_unreadable_position_gets_a_reset(self):
        request, _done = self.connect(last_event_id=-1)
        self.assertEqual(request.kinds(), ["reset", "cluster"])

    def test_a_replaced_table_resets_open_streams_and_the_ring(self):
        self.submit()
        request, _done = self.connect()
        self.node.table.restore(self.node.table.snapshot())
        self.assertEqual(request.kinds(), ["cluster", "reset"])
        request, _done = self.connect(last_event_id=self.applied())
        self.assertEqual(request.kinds(), ["reset", "cluster"])
        position = self.applied()
        self.submit()
        request, _done = self.connect(last_event_id=self.applied())
        self.assertEqual(request.kinds(), ["job", "cluster"])
        self.assertGreater(self.applied(), position)


class BoundsTests(HubTestCase):
    def test_streams_beyond_the_bound_are_refused(self):
        hub = self.make_hub(max_streams=2)
        self.connect(hub=hub)
        self.connect(hub=hub)
        self.assertRaises(errors.Overloaded, self.connect, hub=hub)
        self.assertEqual(hub.stream_count, 2)

    def test_a_closed_connection_is_noticed(self):
        request, _done = self.connect()
        request.finished.errback(ConnectionError("gone"))
        self.assertEqual(self.hub.stream_count, 0)

    def test_a_stream_whose_client_left_is_forgotten(self):
        request, done = self.connect()
        done.cancel()
        self.failureResultOf(done, defer.CancelledError)
        self.assertEqual(self.hub.stream_count, 0)
        self.submit()
        self.assertNotIn(b"event: job", request.written)

    def test_a_paused_reader_gets_what_waited_once_it_reads_again(self):
        request, _done = self.connect()
        request.producer.pauseProducing()
        job_id = self.submit()
        self.assertNotIn(b"event: job", request.written)
        request.producer.resumeProducing()
        self.assertEqual([d["id"] for k, _i, d in request.events() if k == "job"], [job_id])

    def test_a_reader_that_falls_too_far_behind_is_cut_off(self):
        request, done = self.connect()
        stream = request.producer
        stream.pauseProducing()
        for _n in range(sse.MAX_QUEUED_FRAMES + 1):
            stream.send(b"data: x\n\n")
        self.assertTrue(request.lost)
        self.assertEqual(self.successResultOf(done), b"")
        self.assertEqual(self.hub.stream_count, 0)

    def test_a_reader_paused_too_long_is_cut_off(self):
        request, _done = self.connect()
        request.producer.pauseProducing()
        self.clock.advance(sse.MAX_PAUSED_SECONDS + 2)
        self.assertTrue(request.lost)
        self.assertEqual(self.hub.stream_count, 0)

    def test_the_ring_is_bounded_in_bytes(self):
        hub = self.make_hub(ring_bytes=4000)
        for n in range(10):
            self.submit(f"echo {'x' * 900} {n}")
        self.assertLessEqual(hub._ring_size, 4000)
        self.assertGreater(len(hub._ring), 0)

    def test_stopping_ends_every_stream(self):
        _request, done = self.connect()
        self.hub.stopService()
        self.assertEqual(self.successResultOf(done), b"")
        self.assertEqual(self.hub.stream_count, 0)


class FrameTests(unittest.TestCase):
    def test_a_frame_is_one_sse_event_with_one_line_of_json(self):
        self.assertEqual(
            sse.frame("job", {"command": "a\nb"}, 7),
            b'id: 7\nevent: job\ndata: {"command":"a\\nb"}\n\n',
        )
        self.assertEqual(sse.frame("reset", {}), b"event: reset\ndata: {}\n\n")
