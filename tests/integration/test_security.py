"""Mutual TLS, node identity and tokens on real node processes (docs/operations.md).

Three set-ups, each started once for its class: a 3-node cluster with TLS and tokens
(the tests drive it as a client with a client certificate and an admin token), a lone
TLS node without tokens, and a lone plaintext node whose peers never answer. Every
forged call the issue measured on a cluster without credentials is made again here
and must be refused, leaving the job table and leadership as they were.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import struct
import tempfile
import uuid
from pathlib import Path

import grpc
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.cli.certs import make_client
from jobsched.net.outbound import CallFailed, call_deferred
from jobsched.tokens import Role
from tests.e2e.clirun import run_cli
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import (
    ClassShared,
    Cluster,
    NodeFactory,
    client_channel,
    free_port,
    metric_samples,
    wait_for,
)
from tests.pki import TEST_DAYS, ClientCredentials, Pki, new_tokens, write_token_file

JOB_SECONDS = 60


async def rpc(
    node,
    credentials: ClientCredentials | None,
    stub_type,
    method: str,
    request,
    token: str | None = None,
    timeout: float = 10,
):
    """One call to `node` on a channel of its own, as a client with `credentials`."""
    channel = client_channel(node.grpc_address, credentials)
    try:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        stub = getattr(stub_type(channel), method)
        return await call_deferred(reactor, stub, request, timeout, metadata)
    finally:
        channel.close()


def peer_port_of(node) -> int:
    """The peer port a node's log names."""
    found = re.search(r"Peer port (\d+) on ", node.log_text())
    if found is None:
        raise AssertionError(f"node {node.node_id} logged no peer port")
    return int(found.group(1))


def peer_port_answer(
    node, credentials: ClientCredentials, request: pb.AppendEntriesRequest, workdir: Path
) -> bytes:
    """What `node`'s peer port sends back to one framed request over TLS presenting
    `credentials` (blocking; b"" when it closes the connection without an answer)."""
    context = ssl.create_default_context(cadata=credentials.ca_cert.decode())
    if credentials.tls is not None:
        cert, key = workdir / f"peer-{uuid.uuid4().hex}.pem", workdir / "peer-key.pem"
        cert.write_bytes(credentials.tls.cert)
        key.write_bytes(credentials.tls.key)
        context.load_cert_chain(cert, key)
    frame = request.SerializeToString()
    try:
        address = ("127.0.0.1", peer_port_of(node))
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="jobsched") as conn,
        ):
            conn.sendall(struct.pack(">I", len(frame)) + frame)
            return conn.recv(64)
    except (ssl.SSLError, ConnectionResetError):
        return b""


def forged_result(job_id: str, worker: int) -> pb.ForwardJobStatusRequest:
    update = pb.UpdateJobStatusCommand(
        job_id=job_id,
        status=pb.JOB_STATUS_COMPLETED,
        executed_by=worker,
        output="FORGED OUTPUT",
        attempt=1,
    )
    update.exit_code = 0
    return pb.ForwardJobStatusRequest(updates=[update])


FORGED_JOB_ID = str(uuid.uuid4())


def forged_entry(term: int, leader_id: int, index: int) -> pb.AppendEntriesRequest:
    """An AppendEntries that puts job FORGED_JOB_ID into the receiver's log at `index`
    (right after its last entry, when that is `index - 1` of `term`) and commits it."""
    submit = pb.SubmitJobCommand(job_id=FORGED_JOB_ID, command="echo forged", created_at_ms=1)
    command = pb.Command(submit_job=submit).SerializeToString()
    entry = pb.LogEntry(term=term, index=index, command=command)
    return pb.AppendEntriesRequest(
        term=term,
        leader_id=leader_id,
        prev_log_index=index - 1,
        prev_log_term=term if index > 1 else 0,
        entries=[entry],
        leader_commit=index,
    )


class RefusalAssertions:
    async def assertRefused(self, call, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED):
        """`call` (a coroutine) ends with `code`, and the jobsched error code names it."""
        try:
            reply = await call
        except CallFailed as error:
            self.assertEqual(error.code, code, error)
            self.assertEqual(error.error_code, code.name, error)
            return error
        self.fail(f"accepted: {reply!r}")

    async def assertNoConnection(self, call):
        """`call` fails before any answer: the TLS handshake did not complete."""
        try:
            reply = await call
        except CallFailed as error:
            self.assertEqual(error.code, grpc.StatusCode.UNAVAILABLE, error)
            self.assertIsNone(error.error_code)
            return
        self.fail(f"connected: {reply!r}")


class SecureCluster:
    """A 3-node cluster with TLS and tokens; the tests' client has a client
    certificate and the admin token."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="jobsched-security-"))
        self.pki = Pki(self.workdir / "pki").nodes(1, 2, 3)
        self.tokens = new_tokens()
        self.token_file = write_token_file(self.workdir / "tokens", self.tokens)
        self.client = self.pki.client("tester", token=self.tokens[Role.ADMIN])
        self.factory = NodeFactory(self.workdir, credentials=self.client)
        self.cluster = Cluster(
            self.factory,
            3,
            *self.pki.node_args(),
            "--auth-token-file",
            str(self.token_file),
            "--worker-slots",
            "2",
        )


class TlsAndTokensTests(RefusalAssertions, unittest.TestCase):
    timeout = 240
    shared = ClassShared(
        lambda: defer.succeed(SecureCluster()), lambda secure: secure.factory.kill_all_and_remove()
    )

    async def setUp(self):
        self.secure = await self.shared.get(self)
        self.nodes = self.secure.cluster
        for node in self.nodes.nodes.values():
            if not node.is_running():  # a test stopped it; start it again, empty
                node.start()
            node.attach(self)
        await self.nodes.until_all_live()
        self.leader = await self.nodes.find_leader()
        self.followers = [n for n in self.nodes.nodes.values() if n is not self.leader]

    async def all_alive(self) -> bool:
        view = await self.leader.rest("GET", "/api/cluster")
        return all(node["is_alive"] for node in view.body["nodes"])

    async def test_jobs_run_on_every_node_over_mutual_tls(self):
        await wait_for(self.all_alive, 60, "every worker alive at the leader")
        job_ids = []
        for n in range(6):
            request = pb.SubmitJobRequest(command=f"sleep 1; echo tls {n}", timeout_seconds=60)
            job_ids.append((await self.leader.call("SubmitJob", request)).job_id)
        workers = set()
        for job_id in job_ids:
            answer = await wait_finished(self.leader, job_id, JOB_SECONDS)
            self.assertEqual(answer.status, pb.JOB_STATUS_COMPLETED, answer)
            workers.add(answer.executed_by)
        self.assertEqual(workers, {1, 2, 3})  # remote workers' results came over mTLS
        for follower in self.followers:  # REST over HTTPS, checked against the CA

            async def shown_completed(follower=follower) -> bool:
                answer = await follower.rest("GET", f"/api/jobs/{job_ids[0]}")
                return answer.status == 200 and answer.body["status"] == "completed"

            await wait_for(shown_completed, 30, "the follower to apply the result")
            answer = await follower.rest("GET", f"/api/jobs/{job_ids[0]}")
            self.assertEqual((answer.status, answer.body["output"]), (200, "tls 0\n"))
            metrics = metric_samples((await follower.rest("GET", "/metrics")).body)
            on_peer_port = 'jobsched_raft_appends_received_total{via="peer_port"}'
            self.assertGreater(metrics.get(on_peer_port, 0), 0, "the log came over mutual TLS")

    async def test_without_a_certificate_of_the_ca_there_is_no_connection(self):
        node = self.followers[0]
        request = pb.GetClusterStatusRequest()
        for credentials in (self.secure.pki.no_certificate(), self.secure.pki.foreign_client()):
            await self.assertNoConnection(
                rpc(node, credentials, pb_grpc.SchedulerServiceStub, "GetClusterStatus", request)
            )
        await self.assertNoConnection(  # plaintext to a TLS port
            rpc(node, None, pb_grpc.SchedulerServiceStub, "GetClusterStatus", request)
        )
        reply = await rpc(
            node,
            self.secure.client,
            pb_grpc.SchedulerServiceStub,
            "GetClusterStatus",
            request,
            token=self.secure.tokens[Role.READ],
        )
        self.assertEqual(reply.leader_id, self.leader.node_id)

    async def test_forged_node_calls_are_refused_and_change_nothing(self):
        pki, client = self.secure.pki, self.secure.client
        admin = self.secure.tokens[Role.ADMIN]
        sleeper = f"sleep 300.{uuid.uuid4().int % 10**6:06d}"
        request = pb.SubmitJobRequest(command=sleeper, timeout_seconds=600)
        job_id = (await self.leader.call("SubmitJob", request)).job_id
        running = await wait_status(self.leader, job_id, pb.JOB_STATUS_RUNNING, JOB_SECONDS)
        worker = running.assigned_worker
        before = await self.nodes.view(self.leader.node_id)
        term, leader_id = before["current_term"], before["leader_id"]
        log = await self.leader.rest("GET", "/api/raft/log?limit=1")
        after = log.body["last_log_index"] + 1  # where a forged entry would go
        other = next(n.node_id for n in self.followers if n.node_id != worker)
        third = next(i for i in (1, 2, 3) if i not in (worker, other))
        internal, raft = pb_grpc.InternalServiceStub, pb_grpc.RaftServiceStub

        forged = [
            # a client certificate (even with the admin token) is no node
            (self.leader, client, internal, "ForwardJobStatus", forged_result(job_id, 42)),
            (self.leader, client, internal, "ForwardJobStatus", forged_result(job_id, worker)),
            (
                self.leader,
                client,
                internal,
                "WorkerHeartbeat",
                pb.WorkerHeartbeatRequest(node_id=worker, incarnation=7),
            ),
            (self.followers[0], client, raft, "AppendEntries", forged_entry(term, 42, after)),
            (
                self.followers[0],
                client,
                raft,
                "TimeoutNow",
                pb.TimeoutNowRequest(term=term, leader_id=leader_id),
            ),
            (
                self.followers[0],
                client,
                raft,
                "RequestVote",
                pb.VoteRequest(
                    term=term + 1,
                    candidate_id=self.followers[1].node_id,
                    last_log_index=after,
                    last_log_term=term,
                ),
            ),
            # a real node's certificate speaking for another node
            (
                self.leader,
                pki.as_node(other),
                internal,
                "WorkerHeartbeat",
                pb.WorkerHeartbeatRequest(node_id=worker, incarnation=7),
            ),
            (
                self.leader,
                pki.as_node(other),
                internal,
                "ForwardJobStatus",
                forged_result(job_id, worker),
            ),
            (
                self.nodes.nodes[third],
                pki.as_node(other),
                raft,
                "AppendEntries",
                forged_entry(term, leader_id, after),
            ),
            (
                self.nodes.nodes[third],
                pki.as_node(other),
                raft,
                "TimeoutNow",
                pb.TimeoutNowRequest(term=term, leader_id=leader_id),
            ),
            # a node certificate of the CA whose id is no peer
            (
                self.followers[0],
                pki.as_node(9),
                raft,
                "AppendEntries",
                forged_entry(term, 9, after),
            ),
            (self.leader, pki.as_node(9), internal, "ForwardJobStatus", forged_result(job_id, 9)),
        ]
        for node, credentials, stub, method, message in forged:
            await self.assertRefused(rpc(node, credentials, stub, method, message, token=admin))
        forged_on_peer_ports = [
            (self.followers[0], client, forged_entry(term, leader_id, after)),
            (self.nodes.nodes[third], pki.as_node(other), forged_entry(term, leader_id, after)),
            (self.followers[0], pki.as_node(9), forged_entry(term, 9, after)),
            (self.followers[0], pki.no_certificate(), forged_entry(term, leader_id, after)),
        ]
        for node, credentials, message in forged_on_peer_ports:
            answer = await threads.deferToThread(
                peer_port_answer, node, credentials, message, self.secure.workdir
            )
            self.assertEqual(answer, b"", f"{node.node_id} answered a forged AppendEntries")
        for token in (None, "not-a-token-of-this-cluster", self.secure.tokens[Role.SUBMIT]):
            answer = await self.followers[0].rest("POST", "/api/nodes/self/drain", token=token)
            self.assertEqual(
                answer.status, 401 if token != self.secure.tokens[Role.SUBMIT] else 403
            )

        for node in self.nodes.nodes.values():  # the table and leadership are unchanged
            job = await node.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id))
            self.assertEqual((job.status, job.attempts, job.output), (pb.JOB_STATUS_RUNNING, 1, ""))
            view = await self.nodes.view(node.node_id)
            self.assertEqual((view["current_term"], view["leader_id"]), (term, leader_id))
            answer = await node.rest("GET", f"/api/jobs/{FORGED_JOB_ID}")
            self.assertEqual(answer.status, 404)
        cluster = await self.leader.rest("GET", "/api/cluster")
        self.assertFalse(any(node["draining"] for node in cluster.body["nodes"]))
        await self.leader.call("CancelJob", pb.CancelJobRequest(job_id=job_id))

    async def test_what_each_role_may_do(self):
        tokens, node = self.secure.tokens, self.followers[0]
        submit = pb.SubmitJobRequest(command="echo roles")
        for token, status, code in (
            (None, 401, grpc.StatusCode.UNAUTHENTICATED),
            ("x" * 32, 401, grpc.StatusCode.UNAUTHENTICATED),
            (tokens[Role.READ], 403, grpc.StatusCode.PERMISSION_DENIED),
        ):
            answer = await node.rest("POST", "/api/jobs", {"command": "echo roles"}, token=token)
            self.assertEqual((answer.status, answer.body["code"]), (status, code.name))
            await self.assertRefused(self.leader.call("SubmitJob", submit, token=token), code)
        answer = await node.rest("GET", "/api/jobs", token=None)
        self.assertEqual(
            (answer.status, answer.headers["www-authenticate"]), (401, 'Bearer realm="jobsched"')
        )
        for path in ("/health/live", "/", "/dashboard/app.js"):
            self.assertEqual((await node.rest("GET", path, token=None)).status, 200, path)
        self.assertEqual((await node.rest("GET", "/metrics", token=tokens[Role.READ])).status, 200)
        self.assertEqual((await node.rest("GET", "/metrics", token=None)).status, 401)

        job_id = (
            await node.rest(
                "POST", "/api/jobs", {"command": "echo roles"}, token=tokens[Role.SUBMIT]
            )
        ).body["job_id"]
        self.assertTrue(job_id)
        listed = await self.leader.call("ListJobs", pb.ListJobsRequest(), token=tokens[Role.READ])
        self.assertIn(job_id, [job.job_id for job in listed.jobs])
        for token in (tokens[Role.READ], tokens[Role.SUBMIT]):
            answer = await node.rest("POST", "/api/cluster/transfer-leader", {}, token=token)
            self.assertEqual((answer.status, answer.body["code"]), (403, "PERMISSION_DENIED"))
            await self.assertRefused(
                self.leader.call("TransferLeadership", pb.TransferLeadershipRequest(), token=token)
            )
            await self.assertRefused(node.call("DrainNode", pb.DrainNodeRequest(), token=token))
        answer = await node.rest(
            "POST", "/api/cluster/transfer-leader", {}, token=tokens[Role.ADMIN]
        )
        self.assertEqual(answer.status, 200, answer.body)  # a follower had the leader do it
        self.assertNotEqual(answer.body["new_leader_id"], self.leader.node_id)

    async def test_the_cli_over_mutual_tls_with_tokens(self):
        """The `jobsched` command as a user runs it against this cluster: https, the CA,
        a client certificate, a token; a follower redirects to the leader."""
        pki, tokens = self.secure.pki, self.secure.tokens
        client = pki.directory / "cli-client.pem"
        client_key = pki.directory / "cli-client-key.pem"
        if not client.exists():
            make_client(pki.ca, "cli", days=TEST_DAYS).write(client, client_key)
        tls = ["--ca-cert", str(pki.ca_path), "--cert", str(client), "--key", str(client_key)]
        follower = f"https://{self.followers[0].grpc_address}"

        submitted = await run_cli(
            "-a", follower, *tls, "--token", tokens[Role.SUBMIT],
            "job", "submit", "--wait", "echo over tls",
        )  # fmt: skip
        self.assertEqual((submitted.returncode, submitted.stdout), (0, "over tls\n"), submitted)
        self.assertIn(
            f"Redirecting to leader at https://{self.leader.grpc_address}", submitted.stderr
        )

        refused = await run_cli(
            "-a", follower, *tls, "--token", tokens[Role.READ], "job", "submit", "echo no"
        )  # fmt: skip
        self.assertEqual(refused.returncode, 1, refused)
        self.assertTrue(refused.stderr.startswith("Error: "), refused)
        without_token = await run_cli("-a", follower, *tls, "cluster", "status")
        self.assertEqual(without_token.returncode, 1, without_token)
        without_certificate = await run_cli(
            "-a", follower, "--ca-cert", str(pki.ca_path), "--token", tokens[Role.READ],
            "cluster", "status",
        )  # fmt: skip
        self.assertEqual(without_certificate.returncode, 1, without_certificate)
        status = await run_cli(
            "-a", follower, *tls, "-o", "json", "cluster", "status",
            JOBSCHED_TOKEN=tokens[Role.READ],
        )  # fmt: skip
        self.assertEqual(status.returncode, 0, status)
        self.assertEqual(json.loads(status.stdout)["leader_id"], self.leader.node_id)

    async def test_only_admin_drains(self):
        node = self.followers[-1]
        answer = await node.rest(
            "POST", "/api/nodes/self/drain", token=self.secure.tokens[Role.ADMIN]
        )
        self.assertEqual((answer.status, answer.body["success"]), (200, True), answer.body)
        refused = await node.rest("POST", "/api/jobs", {"command": "echo x"})
        self.assertEqual(refused.body["code"], "DRAINING")
        node.kill()  # draining lasts until the process restarts; the next test restarts it

    async def test_tokens_are_reloaded_on_sighup_and_never_logged(self):
        secure, node = self.secure, self.nodes.nodes[1]
        added = new_tokens()[Role.READ]
        tokens = {**secure.tokens}
        write_token_file(secure.token_file, tokens)
        with open(secure.token_file, "a") as file:
            file.write(f"read {added}\n")
        await self.assertRefused(
            node.call("ListJobs", pb.ListJobsRequest(), token=added),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        os.kill(node.process.pid, signal.SIGHUP)
        await wait_for(
            lambda: "4 tokens (admin 1, submit 1, read 2)" in node.log_text(),
            30,
            "the reload to be logged",
        )
        await node.call("ListJobs", pb.ListJobsRequest(), token=added)
        self.assertEqual((await node.rest("GET", "/api/jobs", token=added)).status, 200)
        self.assertEqual(
            (await node.rest("GET", f"/api/jobs?x={'y' * 3}", token="z" * 20)).status, 401
        )
        secure.token_file.write_text("read too-short\n")
        os.kill(node.process.pid, signal.SIGHUP)
        await wait_for(lambda: "not reloaded" in node.log_text(), 30, "the refusal to be logged")
        self.assertEqual((await node.rest("GET", "/api/jobs", token=added)).status, 200)
        write_token_file(secure.token_file, secure.tokens)
        os.kill(node.process.pid, signal.SIGHUP)
        await wait_for(
            lambda: node.log_text().count("Auth tokens reloaded") >= 2, 30, "the second reload"
        )

        logs = "".join(n.log_text() for n in self.nodes.nodes.values())
        for token in [*secure.tokens.values(), added, "too-short", "z" * 20]:
            self.assertNotIn(token, logs)
        self.assertNotIn("Bearer", logs)


class TlsWithoutTokensTests(RefusalAssertions, unittest.TestCase):
    """A lone TLS node without tokens: any client certificate of the CA may use all of
    SchedulerService, none may use the node services."""

    timeout = 120

    async def test_a_client_certificate_may_use_the_scheduler_service_only(self):
        pki = Pki(Path(self.mktemp()).resolve() / "pki").nodes(1)
        client = pki.client()
        node = NodeFactory.for_test(self, client).start(
            "--executor", "process", *[a.replace("{node_id}", "1") for a in pki.node_args()]
        )
        await node.until_ready()
        job_id = (await node.call("SubmitJob", pb.SubmitJobRequest(command="echo mine"))).job_id
        self.assertEqual((await wait_finished(node, job_id)).output, "mine\n")
        self.assertEqual((await node.rest("GET", f"/api/jobs/{job_id}")).body["output"], "mine\n")
        transfer = await node.call("TransferLeadership", pb.TransferLeadershipRequest())
        self.assertEqual(transfer.message, "No peers available for transfer")
        await self.assertRefused(
            rpc(node, client, pb_grpc.RaftServiceStub, "AppendEntries", forged_entry(1, 2, 1))
        )
        await self.assertRefused(
            rpc(
                node,
                client,
                pb_grpc.InternalServiceStub,
                "ForwardJobStatus",
                forged_result(job_id, 1),
            )
        )
        drained = await node.call("DrainNode", pb.DrainNodeRequest())  # allowed; it has no
        self.assertEqual(drained.message, "No peers available for transfer")  # one to hand to
        self.assertIn("TLS on: mutual TLS for gRPC, HTTPS for REST", node.log_text())


class PlaintextPeerClaimTests(RefusalAssertions, unittest.TestCase):
    """Without TLS nobody is authenticated, but a claimed node id must be a peer."""

    timeout = 120

    async def test_claims_of_ids_that_are_no_peer_are_refused(self):
        peers = f"2:127.0.0.1:{free_port()},3:127.0.0.1:{free_port()}"
        node = NodeFactory.for_test(self).start("--executor", "process", node_id=1, peers=peers)
        await wait_for(lambda: node.answers(503, "/health/ready"), 60, "the node to answer")
        raft, internal = pb_grpc.RaftServiceStub, pb_grpc.InternalServiceStub
        for stub, method, message in (
            (raft, "AppendEntries", forged_entry(1, 42, 1)),
            (raft, "TimeoutNow", pb.TimeoutNowRequest(term=1, leader_id=42)),
            (raft, "RequestVote", pb.VoteRequest(term=5, candidate_id=42)),
            (raft, "InstallSnapshot", pb.InstallSnapshotRequest(term=5, leader_id=42)),
            (internal, "WorkerHeartbeat", pb.WorkerHeartbeatRequest(node_id=42)),
            (internal, "ForwardJobStatus", forged_result(str(uuid.uuid4()), 42)),
        ):
            error = await self.assertRefused(rpc(node, None, stub, method, message))
            self.assertIn("node 42 is not a peer", error.details)
        self.assertIsNone((await node.rest("GET", "/api/cluster")).body["leader_id"])
        # a peer's id is believed: without TLS there is no node authentication
        reply = await rpc(node, None, raft, "AppendEntries", forged_entry(50, 2, 1))
        self.assertTrue(reply.success)
        self.assertEqual((await node.rest("GET", "/api/cluster")).body["leader_id"], 2)
        forged = await node.rest("GET", f"/api/jobs/{FORGED_JOB_ID}")  # what the TLS
        self.assertEqual(forged.body["command"], "echo forged")  # cluster test refuses
