"""Both client APIs of a real 3-node cluster, fuzzed with hypothesis.

Every REST route with each of its methods (read from the Klein app), every route with
methods it lacks, paths no route has, and every SchedulerService method (read from the
proto descriptor) get generated requests, on the leader and on a follower: query
parameters with huge integers, odd digits and invalid UTF-8; bodies of wrong types,
with unknown fields, deeply nested, over 64 KiB, not UTF-8; protobuf messages built
from the descriptors, with invalid UTF-8 spliced into string fields as raw bytes
(strategies and checks in `tests/integration/fuzzing.py`). On every answer:

- no server error: never 500; a 503/504 only as a typed availability answer (no leader
  during an election, a commit timeout: a busy machine may see one);
- no HTML but the dashboard, no redirect; every REST error body is JSON with `error`
  and a known `code`; no gRPC INTERNAL or UNKNOWN, every gRPC error carries its code;
- a job is accepted only if API.md allows it (command, timeout, attempts, key);
- a refused or read-only request changes nothing: the same jobs, every finished job
  the same.

TransferLeadership and DrainNode change leadership and draining by design: they are
fuzzed on a cluster of their own (EffectfulCallFuzzTests) and checked for exactly
those effects.

Generated commands never run anything on this machine: the only command text generated
is `: '<text without a quote>'` (`:` does nothing, single quotes stop every
expansion), and the clients refuse to send anything else a server could read as one.

Each target runs JOBSCHED_FUZZ_EXAMPLES examples (default 20) from a seed of its own,
so a run is reproducible; JOBSCHED_FUZZ_SEED picks other seeds. A longer run:
`JOBSCHED_FUZZ_EXAMPLES=500 JOBSCHED_FUZZ_SEED=7 pytest -q integration/test_fuzz_api.py`.
"""

from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import tempfile
from pathlib import Path

import grpc
from hypothesis import given, note, reject
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from tests.integration.fuzzing import (
    CONTENT_TYPES,
    EXAMPLES,
    MAX_JOB_TIMEOUT,
    METHODS,
    SERVICE,
    JobLedger,
    RestCall,
    Target,
    bodies,
    call_grpc,
    carries_harmful_command,
    check_grpc_answer,
    check_rest_answer,
    decoded_json,
    decodes_to_harmful_command,
    fuzz,
    get_json,
    grpc_targets,
    huge_integers,
    json_values,
    normalized,
    raw_requests,
    rest_targets,
    send_rest,
    valid_grpc_submission,
    valid_rest_submission,
)
from tests.nodeproc import Cluster, Node, NodeFactory, wait_until

NODE_OPTIONS = ("--max-job-timeout", str(MAX_JOB_TIMEOUT))
UNKNOWN_OUTCOME = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
TRANSFER_FAILURE = re.compile(  # API.md 2.8: a transfer that may fail on a busy machine,
    # or find no peer to hand over to (every other node drains: they never lead)
    r"Target node \d+ did not catch up within 2s|A leadership transfer is already in progress"
    r"|Target node \d+ did not win the election in time|No peers available for transfer"
)


@functools.cache
def shared_cluster() -> Cluster:
    """The 3 nodes ApiFuzzTests talks to, started on first use and killed by PID when
    the test process exits."""
    workdir = Path(tempfile.mkdtemp(prefix="jobsched-fuzz-"))
    atexit.register(shutil.rmtree, workdir, True)
    factory = NodeFactory(workdir)
    atexit.register(factory.kill_all)  # before the rmtree (atexit is last in, first out)
    return Cluster(factory, 3, *NODE_OPTIONS)


def fuzz_rest(target: Target, node: Node, ledger: JobLedger) -> None:
    """Run one REST target against `node` (blocking: call it in a thread). The ledger
    learns what a request did before any check, so a failed check hides nothing."""

    @fuzz(target.name, target.examples)
    @given(target.requests)
    def run(call: RestCall) -> None:
        note(f"target: {target.name} on node {node.node_id}")
        if carries_harmful_command(decoded_json(call.body)):
            reject()  # random bytes that read as JSON with a command: never sent
        answer = send_rest(node.http_port, call)
        ledger.sent(call, answer)
        submit = call.method == "POST" and normalized(call.path) == "/api/jobs"
        accepted_write = answer.status < 300 and call.method in ("POST", "DELETE")
        if accepted_write:
            ledger.acknowledged(answer.json().get("job_id") if submit else None)
        elif submit and answer.status in (503, 504):  # the entry may commit later
            body = decoded_json(call.body)
            ledger.maybe_submitted(body.get("command") if isinstance(body, dict) else None)
        check_rest_answer(call, answer)
        if submit and answer.status < 300:
            assert valid_rest_submission(call.body), f"accepted an invalid job: {call}"
        if not accepted_write:
            ledger.assert_unchanged(str(call))

    run()


def fuzz_grpc(target: Target, node: Node, channel: grpc.Channel, ledger: JobLedger) -> None:
    """Run one SchedulerService target against `node` (blocking: call it in a thread)."""

    @fuzz(target.name, target.examples)
    @given(target.requests)
    def run(data: bytes) -> None:
        note(f"target: {target.name} on node {node.node_id}")
        if decodes_to_harmful_command(target.name, data):
            reject()  # random bytes that decode to a command: never sent
        answer = call_grpc(channel, target.name, data)
        ledger.sent(f"{target.name}({data!r})", answer)
        ok = answer.code == grpc.StatusCode.OK
        accepted_write = ok and target.name in ("SubmitJob", "CancelJob")
        if accepted_write:
            ledger.acknowledged(getattr(answer.response, "job_id", None))
        elif target.name == "SubmitJob" and answer.code in UNKNOWN_OUTCOME:
            ledger.maybe_submitted(pb.SubmitJobRequest.FromString(data).command)
        check_grpc_answer(target.name, data, answer)
        if ok and target.name == "SubmitJob":
            assert valid_grpc_submission(data), f"accepted an invalid job: {data!r}"
        if not accepted_write:
            ledger.assert_unchanged(f"{target.name}({data[:300]!r})")

    run()


class ApiFuzzTests(unittest.TestCase):
    """Generated REST and gRPC requests on a leader and a follower (module docstring)."""

    timeout = 600

    async def setUp(self) -> None:
        self.cluster = shared_cluster()
        for node in self.cluster.nodes.values():
            node.attach(self)
        self.leader = await self.cluster.find_leader()
        self.follower = next(n for n in self.cluster.nodes.values() if n is not self.leader)
        self.ledger = JobLedger(self.leader.http_port)
        await deferToThread(self.ledger.refresh)

    async def rest_on(self, node: Node) -> None:
        for target in rest_targets(self.ledger.known):
            await deferToThread(fuzz_rest, target, node, self.ledger)
        self.cluster.check_no_node_died()

    async def grpc_on(self, node: Node) -> None:
        channel = grpc.insecure_channel(node.grpc_address)
        self.addCleanup(channel.close)
        for target in grpc_targets(self.ledger.known):
            await deferToThread(fuzz_grpc, target, node, channel, self.ledger)
        self.cluster.check_no_node_died()

    async def test_rest_on_the_leader(self):
        await self.rest_on(self.leader)

    async def test_rest_on_a_follower(self):
        await self.rest_on(self.follower)

    async def test_grpc_on_the_leader(self):
        await self.grpc_on(self.leader)

    async def test_grpc_on_a_follower(self):
        await self.grpc_on(self.follower)


def transfer_target_of(body: bytes | None) -> int | None:
    """The target a valid POST /api/cluster/transfer-leader body names (0 = any), or
    None when the body must be refused: anything but nothing, `{}` or
    `{"target_node_id": <non-negative int64 or null>}` (a JSON `null` body too)."""
    if not body or not body.strip():
        return 0
    fields = decoded_json(body)
    if not isinstance(fields, dict) or not set(fields) <= {"target_node_id"}:
        return None
    target = fields.get("target_node_id")
    if target is None:
        return 0
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < 2**63:
        return None
    return target


def transfer_bodies() -> st.SearchStrategy[bytes | None]:
    """Transfer bodies: mostly `{"target_node_id": ...}` (a node, none, an unknown one,
    a wrong type; sometimes an unknown field too), else any body."""
    target = st.one_of(st.integers(0, 4), st.integers(0, 4), huge_integers(), json_values())
    shaped = st.fixed_dictionaries(
        {"target_node_id": target}, optional={"unknown": json_values()}
    ).map(lambda v: json.dumps(v).encode())
    return st.one_of(st.none(), shaped, shaped, bodies(submits=False))


class EffectfulCallFuzzTests(unittest.TestCase):
    """TransferLeadership and DrainNode fuzzed on a cluster of their own, each checked
    for its own effect: leadership moves only on success, to the node named (or, for
    0, to another node), and a refused call moves nothing; a drained node is marked
    draining and refuses jobs, a drained leader hands over, and a refused drain drains
    nothing. Neither ever changes a job."""

    timeout = 600

    async def setUp(self) -> None:
        self.cluster = Cluster(NodeFactory.for_test(self), 3, *NODE_OPTIONS)
        leader = await self.cluster.find_leader()
        self.ledger = JobLedger(self.cluster.nodes[1].http_port)
        for n in range(3):  # jobs for "no job changes" to watch
            answer = await leader.rest("POST", "/api/jobs", {"command": f": 'job {n}'"})
            self.assertEqual(answer.status, 200, answer)
            self.ledger.acked.add(answer.body["job_id"])  # node 1 may apply it late
        self.channels = {}
        for node_id, node in self.cluster.nodes.items():
            self.channels[node_id] = grpc.insecure_channel(node.grpc_address)
            self.addCleanup(self.channels[node_id].close)
        await deferToThread(self.ledger.refresh)

    def leader_id(self) -> int:
        """The leader every node agrees on (blocking)."""
        return self.cluster.leader(timeout=60).node_id

    def requests(self, method_name: str, rest: st.SearchStrategy[RestCall]):
        """(which node, gRPC payload or REST call) of one effectful method; the node is
        "leader" (mostly) or "follower", whichever node that is when the call is made."""
        grpc_payloads = raw_requests(SERVICE.methods_by_name[method_name], self.ledger.known)
        roles = st.sampled_from(["leader", "leader", "follower"])
        return st.tuples(roles, st.one_of(grpc_payloads, rest))

    def node_in(self, role: str, leader_id: int) -> int:
        if role == "leader":
            return leader_id
        return min(node_id for node_id in self.cluster.nodes if node_id != leader_id)

    def call(self, node_id: int, method_name: str, request) -> tuple[bool, object]:
        """Send one request; (refused, the decoded answer: the reply message for gRPC,
        the JSON body for REST)."""
        if isinstance(request, bytes):
            answer = call_grpc(self.channels[node_id], method_name, request)
            self.ledger.sent(f"{method_name}({request!r}) to node {node_id}", answer)
            check_grpc_answer(method_name, request, answer)
            return answer.code != grpc.StatusCode.OK, answer.response
        answer = send_rest(self.cluster.nodes[node_id].http_port, request)
        self.ledger.sent(f"{request} to node {node_id}", answer)
        check_rest_answer(request, answer)
        return answer.status not in (200, 409), answer.json()

    async def test_transfer_leadership(self):
        rest = st.builds(
            RestCall,
            method=st.just("POST"),
            path=st.just("/api/cluster/transfer-leader"),
            body=transfer_bodies(),
            content_type=st.sampled_from(CONTENT_TYPES),
        )
        requests = self.requests("TransferLeadership", rest)

        @fuzz("TransferLeadership", EXAMPLES * 2)
        @given(requests)
        def run(sent) -> None:
            role, request = sent
            before = self.leader_id()
            node_id = self.node_in(role, before)
            note(f"sent to node {node_id}, leader before: {before}")
            refused, reply = self.call(node_id, "TransferLeadership", request)
            if isinstance(request, bytes):
                target = (
                    None
                    if refused
                    else pb.TransferLeadershipRequest.FromString(request).target_node_id
                )
            else:
                target = transfer_target_of(request.body)
                assert refused == (target is None), f"{request} refused={refused}: {reply}"
            if refused:
                assert self.leader_id() == before, "a refused transfer moved leadership"
                self.ledger.assert_unchanged(f"refused transfer {request!r}")
                return
            success, message, new_leader = _transfer_outcome(reply)
            if node_id != before and not isinstance(request, RestCall):
                # gRPC answers on the node asked; REST on a follower has the leader act
                assert (success, message) == (False, "Not the leader"), reply
            elif target and (target not in self.cluster.nodes or target == before):
                assert (success, message) == (False, f"Unknown target node {target}"), reply
            if success:
                assert message == f"Leadership transferred to node {new_leader}", reply
                assert new_leader == (target or new_leader) and new_leader != before, reply
                assert self.leader_id() == new_leader
            elif message in ("Not the leader", f"Unknown target node {target}"):
                assert self.leader_id() == before, f"leadership moved after {reply}"
            else:
                assert TRANSFER_FAILURE.fullmatch(message), reply
            self.ledger.assert_unchanged(f"transfer {request!r}")

        await deferToThread(run)
        self.cluster.check_no_node_died()

    async def test_drain_node(self):
        rest = st.builds(
            RestCall,
            method=st.sampled_from(METHODS),
            path=st.just("/api/nodes/self/drain"),
            body=bodies(submits=False),
            content_type=st.sampled_from(CONTENT_TYPES),
        )
        requests = self.requests("DrainNode", rest)
        drained: set = set()

        @fuzz("DrainNode")
        @given(requests)
        def run(sent) -> None:
            role, request = sent
            before = self.leader_id()
            node_id = self.node_in(role, before)
            note(f"sent to node {node_id}, leader before: {before}, drained: {drained}")
            refused, reply = self.call(node_id, "DrainNode", request)
            if not isinstance(request, bytes):
                assert refused == (request.method != "POST"), f"{request}: {reply}"
            if refused:
                assert self.draining() == drained, f"a refused drain drained: {request!r}"
            else:
                success, message = _drain_outcome(reply)
                drained.add(node_id)  # even when the hand-over below fails
                wait_until(lambda: self.draining() == drained, 30, "the drain to be seen")
                if success:
                    assert message == "Node drained successfully", reply
                    if node_id == before:
                        assert self.leader_id() != node_id, "a drained leader kept leading"
                else:  # only a leader's hand-over can fail (no job runs long here)
                    assert node_id == before and TRANSFER_FAILURE.fullmatch(message), reply
            for drained_id in drained:
                submit = RestCall("POST", "/api/jobs", b'{"command": ": \'x\'"}', None)
                answer = send_rest(self.cluster.nodes[drained_id].http_port, submit)
                assert (answer.status, answer.json()["code"]) == (503, "DRAINING"), answer
            self.ledger.assert_unchanged(f"drain {request!r}")

        await deferToThread(run)
        self.cluster.check_no_node_died()

    def draining(self) -> set:
        """The nodes the leader reports draining (blocking)."""
        view = get_json(self.cluster.nodes[self.leader_id()].http_port, "/api/cluster")
        return {node["node_id"] for node in view["nodes"] if node["draining"]}


def _transfer_outcome(reply) -> tuple[bool, str, int]:
    if isinstance(reply, dict):
        return reply["success"], reply["message"], reply["new_leader_id"] or 0
    return reply.success, reply.message, reply.new_leader_id


def _drain_outcome(reply) -> tuple[bool, str]:
    if isinstance(reply, dict):
        return reply["success"], reply["message"]
    return reply.success, reply.message
