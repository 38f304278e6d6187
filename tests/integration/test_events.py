"""GET /api/events and the dashboard's files, over HTTP, on a real node.

The stream is read as a browser reads it: events in order, ids the applied index, a
snapshot's X-Applied-Index placing it in the stream, Last-Event-ID resuming it.
"""

from __future__ import annotations

import json

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from tests.nodeproc import NodeFactory, wait_for

JOB_SECONDS = 60


class EventReader(protocol.Protocol):
    """Collects the events of one open stream; `close` drops the connection."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict]] = []
        self._text = ""
        self.ended = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._text += data.decode()
        *blocks, self._text = self._text.split("\n\n")
        for block in blocks:
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                event_id = int(fields["id"]) if "id" in fields else None
                self.events.append((fields["event"], event_id, json.loads(fields["data"])))

    def connectionLost(self, reason) -> None:
        self.ended.callback(None)

    def jobs(self, job_id: str) -> list[tuple[int, dict]]:
        return [
            (i, data) for kind, i, data in self.events if kind == "job" and data["id"] == job_id
        ]

    def close(self) -> defer.Deferred:
        if not self.ended.called:
            self.transport.stopProducing()
        return self.ended


class EventStreamTests(unittest.TestCase):
    async def asyncSetUp(self):
        self.node = NodeFactory.for_test(self).start("--executor", "process")
        await self.node.until_ready()
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)

    async def open_stream(self, last_event_id: int | None = None):
        headers = Headers({b"Accept": [b"text/event-stream"]})
        if last_event_id is not None:
            headers.addRawHeader(b"Last-Event-ID", str(last_event_id).encode())
        response = await self.agent.request(b"GET", f"{self.node.url}/api/events".encode(), headers)
        reader = EventReader()
        response.deliverBody(reader)
        self.addCleanup(reader.close)
        return response, reader

    async def test_a_job_is_followed_from_submission_to_its_end(self):
        await self.asyncSetUp()
        response, reader = await self.open_stream()
        self.assertEqual(response.code, 200)
        content_type = response.headers.getRawHeaders(b"content-type")[0]
        self.assertTrue(content_type.startswith(b"text/event-stream"))
        self.assertTrue(response.headers.getRawHeaders(b"content-security-policy"))
        await wait_for(lambda: reader.events, 10, "the first event")
        self.assertEqual(reader.events[0][0], "cluster")
        self.assertEqual(reader.events[0][2]["role"], "leader")

        job_id = (await self.node.rest("POST", "/api/jobs", {"command": "echo hi"})).body["job_id"]
        await wait_for(
            lambda: any(d["status"] == "completed" for _i, d in reader.jobs(job_id)),
            JOB_SECONDS,
            "the job's events up to completed",
        )
        statuses = [data["status"] for _id, data in reader.jobs(job_id)]
        self.assertEqual(statuses, ["pending", "running", "completed"])
        self.assertEqual(reader.jobs(job_id)[-1][1]["output"], "hi\n")
        ids = [event_id for _kind, event_id, _data in reader.events if event_id is not None]
        self.assertEqual(ids, sorted(ids))

        snapshot = await self.node.rest("GET", "/api/jobs?limit=10")
        self.assertGreaterEqual(int(snapshot.headers["x-applied-index"]), ids[-1])

        first_id = reader.jobs(job_id)[0][0]
        await reader.close()
        _response, resumed = await self.open_stream(last_event_id=first_id)
        await wait_for(lambda: len(resumed.jobs(job_id)) >= 3, 10, "the replay")
        self.assertEqual([d["status"] for _i, d in resumed.jobs(job_id)], statuses)
        self.assertNotIn("reset", [kind for kind, _id, _data in resumed.events])

    async def test_a_position_from_another_history_gets_a_reset(self):
        await self.asyncSetUp()
        _response, reader = await self.open_stream(last_event_id=10**9)
        await wait_for(lambda: len(reader.events) >= 2, 10, "two events")
        self.assertEqual([kind for kind, _id, _data in reader.events[:2]], ["reset", "cluster"])


class DashboardFilesTests(unittest.TestCase):
    async def test_the_page_and_its_files_are_served_with_the_policy(self):
        node = NodeFactory.for_test(self).start("--executor", "process")
        await node.until_ready()
        page = await node.rest("GET", "/")
        self.assertEqual(page.status, 200)
        self.assertIn('src="/dashboard/app.js"', page.body)
        self.assertIn("script-src 'self'", page.headers["content-security-policy"])
        script = await node.rest("GET", "/dashboard/app.js")
        self.assertEqual(script.headers["content-type"], "text/javascript; charset=utf-8")
        self.assertTrue(script.headers["etag"])
        self.assertIn("script-src 'self'", script.headers["content-security-policy"])
        missing = await node.rest("GET", "/dashboard/nothing.js")
        self.assertEqual((missing.status, missing.body["code"]), (404, "NOT_FOUND"))

    async def test_newest_first_paging_with_the_total(self):
        node = NodeFactory.for_test(self).start("--executor", "process")
        await node.until_ready()
        ids = []
        for n in range(3):
            answer = await node.rest("POST", "/api/jobs", {"command": f"echo {n}"})
            ids.append(answer.body["job_id"])
        first = await node.rest("GET", "/api/jobs?limit=2&order=desc")
        self.assertEqual([job["id"] for job in first.body], ids[::-1][:2])
        self.assertEqual(first.headers["x-total-count"], "3")
        token = first.headers["x-next-page-token"]
        second = await node.rest("GET", f"/api/jobs?limit=2&order=desc&page_token={token}")
        self.assertEqual([job["id"] for job in second.body], ids[:1])
        wrong = await node.rest("GET", "/api/jobs?order=sideways")
        self.assertEqual(wrong.status, 400)
