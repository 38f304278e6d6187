"""Tokens, certificate identities, `jobsched certs`, the access rules of gRPC and REST,
and a real grpc.aio server with mutual TLS and tokens (docs/operations.md, "TLS")."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import stat
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from treq.testing import StubTreq
from twisted.internet import defer, threads
from twisted.trial import unittest

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.grpc_servicers import InternalServicer, SchedulerServicer
from jobsched.api.raft_servicer import RaftServicer
from jobsched.api.rest import ROUTE_ROLES, RestApi
from jobsched.cli.certs import CertError, make_ca, make_client, make_node
from jobsched.cli.main import main
from jobsched.config import NodeConfig
from jobsched.identity import (
    CredentialError,
    TlsFiles,
    TlsMaterial,
    check_node_material,
    node_id_of,
    node_id_of_pem,
)
from jobsched.net import metadata
from jobsched.net.access import SCHEDULER_ROLES, AccessPolicy, Caller
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.server import GrpcServerService
from jobsched.node import binds_beyond_this_host
from jobsched.tokens import Role, TokenFileError, TokenStore, parse_tokens
from tests.nodeproc import client_channel
from tests.pki import Pki
from tests.unit.test_grpc_server import FakeJobs

READ, SUBMIT, ADMIN = "read-token-0123456789", "submit-token-0123456789", "admin-token-0123456789"
TOKEN_TEXT = f"""
# role token
read {READ}
submit {SUBMIT}   # for the CI
admin {ADMIN}
"""


def store() -> TokenStore:
    return TokenStore(parse_tokens(TOKEN_TEXT))


class TokenTests(unittest.TestCase):
    def test_a_token_file_with_comments_and_blank_lines(self):
        self.assertEqual(
            parse_tokens(TOKEN_TEXT),
            [(Role.READ, READ), (Role.SUBMIT, SUBMIT), (Role.ADMIN, ADMIN)],
        )
        self.assertEqual(store().summary(), "3 tokens (admin 1, submit 1, read 1)")

    def test_each_role_may_do_what_the_roles_below_may(self):
        tokens = store()
        for token, role in ((READ, Role.READ), (SUBMIT, Role.SUBMIT), (ADMIN, Role.ADMIN)):
            for needed in Role:
                if needed <= role:
                    self.assertEqual(tokens.authorize(f"Bearer {token}", needed), role)
                else:
                    with self.assertRaises(errors.PermissionDenied) as caught:
                        tokens.authorize(f"Bearer {token}", needed)
                    self.assertEqual(caught.exception.code, "PERMISSION_DENIED")
                    self.assertNotIn(token, caught.exception.message)

    def test_no_token_or_an_unknown_one_is_unauthenticated(self):
        for header in (None, "", f"Basic {ADMIN}", "Bearer ", f"Bearer {ADMIN}x", ADMIN):
            with self.assertRaises(errors.Unauthenticated) as caught:
                store().authorize(header, Role.READ)
            self.assertEqual(caught.exception.code, "UNAUTHENTICATED")
            self.assertNotIn(ADMIN, caught.exception.message)

    def test_replace_swaps_every_token_at_once(self):
        tokens = store()
        tokens.replace([(Role.READ, "another-token-0123456789")])
        self.assertIsNone(tokens.role_of(ADMIN))
        self.assertEqual(tokens.role_of("another-token-0123456789"), Role.READ)
        self.assertEqual(len(tokens), 1)

    def test_a_bad_line_is_named_and_never_quoted(self):
        for text, message in (
            (f"read {READ} extra", "line 1: expected `ROLE TOKEN` (got 3 words)"),
            (f"\n{READ} read", "line 2: the role must be admin, submit or read"),
            (f"Admin {ADMIN}", "line 1: the role must be admin, submit or read"),
            ("read short", "line 1: a token is at least 16"),
            ("read tökentökentökentöken", "line 1: a token is at least 16"),
            (f"read {READ}\nadmin {READ}", "line 2: repeats the token of an earlier line"),
        ):
            with self.assertRaises(TokenFileError) as caught:
                parse_tokens(text)
            self.assertTrue(str(caught.exception).startswith(message), caught.exception)
            for word in (READ, ADMIN, "short", "tökentöken", "extra"):
                self.assertNotIn(word, str(caught.exception))


class IdentityTests(unittest.TestCase):
    def setUp(self):
        self.ca = make_ca(days=2)

    def test_a_node_certificate_names_its_node_and_a_client_one_none(self):
        node = make_node(self.ca, 7, ["node7.example"], ["10.0.0.7"])
        self.assertEqual(node_id_of(node.cert), 7)
        self.assertEqual(node_id_of_pem(node.cert_pem()), 7)
        self.assertIsNone(node_id_of(make_client(self.ca, "alice").cert))
        names = node.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["jobsched", "node7.example"])
        self.assertEqual([str(a) for a in names.get_values_for_type(x509.IPAddress)], ["10.0.0.7"])

    def test_a_certificate_naming_two_nodes_names_none(self):
        node = make_node(self.ca, 7)
        builder = (
            x509.CertificateBuilder()
            .subject_name(node.cert.subject)
            .issuer_name(self.ca.cert.subject)
            .public_key(node.key.public_key())
            .serial_number(1)
            .not_valid_before(node.cert.not_valid_before_utc)
            .not_valid_after(node.cert.not_valid_after_utc)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier("jobsched://node/1"),
                        x509.UniformResourceIdentifier("jobsched://node/2"),
                    ]
                ),
                critical=False,
            )
        )
        self.assertIsNone(node_id_of(builder.sign(self.ca.key, hashes.SHA256())))

    def check(self, issued, node_id: int = 1, now=None):
        material = TlsMaterial(self.ca.cert_pem(), issued.cert_pem(), issued.key_pem())
        check_node_material(material, node_id, now or datetime.datetime.now(datetime.UTC))

    def test_an_expired_or_not_yet_valid_certificate_is_refused(self):
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        ca = make_ca(days=3650, now=past)
        self.ca = ca
        expired = make_node(ca, 1, days=30, now=past)
        with self.assertRaisesRegex(CredentialError, "^--cert: expired on 2020-01-31"):
            self.check(expired)
        with self.assertRaisesRegex(CredentialError, "^--cert: is not valid before 2019-12-31"):
            self.check(expired, now=past - datetime.timedelta(days=1))
        self.check(make_node(ca, 1))

    def test_a_missing_file_names_its_option(self):
        with self.assertRaisesRegex(CredentialError, "^--key: cannot read /nonexistent/key"):
            TlsFiles(__file__, __file__, "/nonexistent/key").read()


class CertsCommandTests(unittest.TestCase):
    """`jobsched certs` as a user runs it (in this process)."""

    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()

    def certs(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["certs", *argv, "--dir", str(self.dir)])
        return code, out.getvalue(), err.getvalue()

    def load(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.dir / name).read_bytes())

    def test_a_ca_a_node_and_a_client(self):
        self.assertEqual(self.certs("init")[0], 0)
        code, out, _err = self.certs("node", "--id", "3", "--dns", "n3.local", "--ip", "127.0.0.1")
        self.assertEqual(code, 0)
        self.assertIn("node-3.pem", out)
        self.assertEqual(self.certs("client", "--name", "ci-bot")[0], 0)
        ca, node, client = (
            self.load("ca.pem"),
            self.load("node-3.pem"),
            self.load("client-ci-bot.pem"),
        )
        node.verify_directly_issued_by(ca)
        client.verify_directly_issued_by(ca)
        self.assertEqual((node_id_of(node), node_id_of(client)), (3, None))
        for key in ("ca-key.pem", "node-3-key.pem", "client-ci-bot-key.pem"):
            self.assertEqual(stat.S_IMODE(os.stat(self.dir / key).st_mode), 0o600, key)
        lifetime = node.not_valid_after_utc - node.not_valid_before_utc
        self.assertEqual(lifetime.days, 365)
        self.assertGreaterEqual((ca.not_valid_after_utc - ca.not_valid_before_utc).days, 3650)
        material = TlsFiles(
            str(self.dir / "ca.pem"), str(self.dir / "node-3.pem"), str(self.dir / "node-3-key.pem")
        ).read()
        check_node_material(material, 3, datetime.datetime.now(datetime.UTC))

    def test_nothing_is_overwritten_without_force(self):
        self.certs("init")
        before = (self.dir / "ca.pem").read_bytes()
        code, _out, err = self.certs("init")
        self.assertEqual((code, err.count("\n")), (1, 1))
        self.assertIn("ca.pem exists (use --force to replace it)", err)
        self.assertEqual((self.dir / "ca.pem").read_bytes(), before)
        self.assertEqual(self.certs("init", "--force")[0], 0)
        self.assertNotEqual((self.dir / "ca.pem").read_bytes(), before)

    def test_a_ca_of_another_name_and_other_key_types(self):
        self.certs("init", "--key-type", "ec-p384", "--days", "30")
        (self.dir / "ca.pem").rename(self.dir / "mine.pem")
        code, _out, err = self.certs("node", "--id", "1")
        self.assertEqual(code, 1)
        self.assertIn("cannot read", err)
        code, _out, _err = self.certs(
            "node",
            "--id",
            "1",
            "--ca-cert",
            str(self.dir / "mine.pem"),
            "--key-type",
            "rsa-3072",
            "--days",
            "400",
        )
        self.assertEqual(code, 0)
        node = self.load("node-1.pem")
        self.assertEqual(node.public_key().key_size, 3072)
        ca = self.load("mine.pem")
        self.assertEqual(node.not_valid_after_utc, ca.not_valid_after_utc)  # not beyond the CA

    def test_bad_input_is_one_line(self):
        self.certs("init")
        for argv, message in (
            (("node", "--id", "0"), "--id must be from 1"),
            (("node", "--id", "1", "--ip", "not-an-ip"), "--ip: not an IP address"),
            (("node", "--id", "1", "--dns", "bad name"), "--dns: not a host name"),
            (("client", "--name", "../evil"), "--name: letters, digits"),
            (("client", "--name", "x", "--days", "0"), "--days must be at least 1"),
        ):
            code, _out, err = self.certs(*argv)
            self.assertEqual((code, err.count("\n")), (1, 1), err)
            self.assertIn(message, err)
        self.assertRaises(CertError, make_client, make_ca(), "")


def caller(node_id: int | None = None, token: str | None = None, certified: bool = True):
    return Caller(certified, node_id, f"Bearer {token}" if token else None)


RAFT, INTERNAL = "/scheduler.RaftService/", "/scheduler.InternalService/"
SCHED = "/scheduler.SchedulerService/"


class AccessPolicyTests(unittest.TestCase):
    def setUp(self):
        self.tls = AccessPolicy({2: None, 3: None}, tls=True, tokens=store())
        self.plain = AccessPolicy({2: None, 3: None}, tls=False)

    def assertDenied(self, policy, method, who, request, error=errors.PermissionDenied):
        with self.assertRaises(error):
            policy.check(method, who, request)

    def test_every_method_has_a_rule(self):
        for service in pb.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                name = f"/{service.full_name}/{method.name}"
                self.assertTrue(self.tls.knows(name), name)
        self.assertFalse(self.tls.knows("/scheduler.SchedulerService/NoSuchMethod"))
        self.assertDenied(self.tls, SCHED + "NoSuchMethod", caller(2), None)

    def test_with_tls_node_calls_come_from_the_peer_they_claim_to_be(self):
        append = pb.AppendEntriesRequest(term=1, leader_id=2)
        self.tls.check(RAFT + "AppendEntries", caller(2), append)
        self.assertDenied(self.tls, RAFT + "AppendEntries", caller(3), append)
        self.assertDenied(self.tls, RAFT + "AppendEntries", caller(None, ADMIN), append)
        self.assertDenied(self.tls, RAFT + "AppendEntries", caller(9), append)
        self.assertDenied(self.tls, RAFT + "AppendEntries", caller(certified=False), append)
        beat = pb.WorkerHeartbeatRequest(node_id=3)
        self.tls.check(INTERNAL + "WorkerHeartbeat", caller(3), beat)
        self.assertDenied(self.tls, INTERNAL + "WorkerHeartbeat", caller(2), beat)
        results = pb.ForwardJobStatusRequest(
            updates=[
                pb.UpdateJobStatusCommand(executed_by=2),
                pb.UpdateJobStatusCommand(executed_by=3),
            ]
        )
        self.assertDenied(self.tls, INTERNAL + "ForwardJobStatus", caller(2), results)
        del results.updates[1]
        self.tls.check(INTERNAL + "ForwardJobStatus", caller(2), results)
        self.tls.check(RAFT + "RequestVote", caller(3), pb.VoteRequest(candidate_id=3))
        self.assertDenied(
            self.tls, RAFT + "TimeoutNow", caller(3), pb.TimeoutNowRequest(leader_id=2)
        )
        self.tls.check(INTERNAL + "GetJobOutput", caller(2), pb.GetJobOutputRequest())
        self.tls.check(RAFT + "AppendEntries", caller(2), object())  # undecodable: refused later

    def test_without_tls_a_claimed_id_must_be_a_peer(self):
        self.plain.check(
            RAFT + "AppendEntries", caller(certified=False), pb.AppendEntriesRequest(leader_id=3)
        )
        for request, method in (
            (pb.AppendEntriesRequest(leader_id=42), "AppendEntries"),
            (pb.TimeoutNowRequest(leader_id=1), "TimeoutNow"),  # its own id is no peer
            (pb.VoteRequest(candidate_id=42), "RequestVote"),
            (pb.InstallSnapshotRequest(leader_id=42), "InstallSnapshot"),
        ):
            self.assertDenied(self.plain, RAFT + method, caller(certified=False), request)
        self.plain.check(SCHED + "DrainNode", caller(certified=False), pb.DrainNodeRequest())

    def test_clients_need_a_token_of_the_role_peers_need_none(self):
        drain = SCHED + "DrainNode"
        self.tls.check(drain, caller(2), None)  # a peer forwarding for its client
        self.tls.check(drain, caller(None, ADMIN), None)
        self.assertDenied(self.tls, drain, caller(None, SUBMIT), None)
        self.assertDenied(self.tls, drain, caller(None), None, errors.Unauthenticated)
        self.assertDenied(self.tls, drain, caller(9), None, errors.Unauthenticated)  # no peer
        self.tls.check(SCHED + "SubmitJob", caller(None, SUBMIT), None)
        self.assertDenied(self.tls, SCHED + "SubmitJob", caller(None, READ), None)
        no_tokens = AccessPolicy({2: None}, tls=True)
        for method in SCHEDULER_ROLES:
            no_tokens.check(SCHED + method, caller(None), None)

    def test_only_methods_that_every_caller_passes_are_left_unchecked(self):
        callers = [caller(2), caller(9), caller(None), caller(None, READ), caller(certified=False)]
        no_tokens = AccessPolicy({2: None}, tls=True)
        for policy in (self.tls, self.plain, no_tokens):
            for service in pb.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    name = f"/{service.full_name}/{method.name}"
                    if not policy.admits_anyone(name):
                        continue
                    for who in callers:
                        policy.check(name, who, None)
        self.assertTrue(self.plain.admits_anyone(SCHED + "SubmitJob"))
        self.assertFalse(self.tls.admits_anyone(SCHED + "ListJobs"))  # tokens decide
        self.assertFalse(self.plain.admits_anyone(INTERNAL + "ForwardJobStatus"))
        self.assertFalse(self.plain.admits_anyone(SCHED + "NoSuchMethod"))


class FakeApi:
    def drain(self):
        return defer.succeed((True, "Node drained successfully"))


class RestAccessTests(unittest.TestCase):
    def client(self, tokens: TokenStore | None = None) -> StubTreq:
        return StubTreq(RestApi(FakeApi(), None, tokens=tokens).resource())

    @defer.inlineCallbacks
    def request(self, client, method, path, token=None):
        headers = {b"Authorization": [f"Bearer {token}".encode()]} if token else {}
        response = yield client.request(method, "http://node" + path, headers=headers)
        body = yield response.content()
        return response, body

    def test_every_route_says_who_may_call_it(self):
        self.assertLessEqual(set(RestApi.app.endpoints), set(ROUTE_ROLES))
        open_routes = {name for name, role in ROUTE_ROLES.items() if role is None}
        self.assertEqual(open_routes, {"index", "dashboard_file", "live", "ready"})
        self.assertEqual(ROUTE_ROLES["drain"], Role.ADMIN)
        self.assertEqual(ROUTE_ROLES["metrics"], Role.READ)

    def test_a_route_that_says_nothing_stops_the_site(self):
        class Careless(RestApi):
            app = RestApi.app.__class__()

            @app.route("/oops")
            def oops(self, request):
                return b""

        with self.assertRaisesRegex(RuntimeError, "REST routes without an access rule: oops"):
            Careless(FakeApi(), None).resource()

    @defer.inlineCallbacks
    def test_tokens_decide(self):
        client = self.client(store())
        response, body = yield self.request(client, "POST", "/api/nodes/self/drain")
        self.assertEqual(response.code, 401)
        self.assertEqual(
            response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="jobsched"']
        )
        self.assertIn(b'"code": "UNAUTHENTICATED"', body)
        response, body = yield self.request(client, "POST", "/api/nodes/self/drain", SUBMIT)
        self.assertEqual(response.code, 403)
        self.assertIn(b'"code": "PERMISSION_DENIED"', body)
        response, _body = yield self.request(client, "POST", "/api/nodes/self/drain", ADMIN)
        self.assertEqual(response.code, 200)
        response, _body = yield self.request(client, "GET", "/api/jobs/not-a-uuid", READ)
        self.assertEqual(response.code, 400)  # past the check, refused by the route
        response, _body = yield self.request(client, "GET", "/health/live")
        self.assertEqual(response.code, 200)

    @defer.inlineCallbacks
    def test_without_tokens_anyone_may(self):
        response, _body = yield self.request(self.client(), "POST", "/api/nodes/self/drain")
        self.assertEqual(response.code, 200)


class BindWarningTests(unittest.TestCase):
    def test_a_node_open_beyond_this_host_without_tls_is_told_so(self):
        for host, warned in (
            ("127.0.0.1", False),
            ("127.0.0.2", False),
            ("::1", False),
            ("localhost", False),
            ("0.0.0.0", True),
            ("10.1.2.3", True),
            ("node1.example.com", True),
        ):
            self.assertEqual(binds_beyond_this_host(NodeConfig(host=host)), warned, host)


class TlsServerTests(unittest.TestCase):
    """A real grpc.aio server with mutual TLS and tokens (SchedulerService over fake
    jobs, InternalService over nothing it will reach)."""

    def setUp(self):
        from twisted.internet import reactor

        self.pki = Pki(Path(self.mktemp()).resolve())
        cert, key = self.pki.node(1)
        wire = Wire(TlsFiles(str(self.pki.ca_path), str(cert), str(key)))
        self.api = FakeJobs(3)
        bridge = ReactorBridge(reactor)
        services = [
            SchedulerServicer(self.api, None, bridge).register,
            InternalServicer(self.api, None, bridge).register,
            RaftServicer(None, bridge).register,
        ]
        access = AccessPolicy({2: None}, tls=True, tokens=store())
        self.server = GrpcServerService("127.0.0.1", 0, services, wire, reactor, access)
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.address = f"127.0.0.1:{self.server.port}"

    def call(self, credentials, method: str, request, token: str | None = None):
        """A blocking call in a thread: the reply, or the RpcError."""

        def blocking():
            channel = client_channel(self.address, credentials)
            try:
                stub = pb_grpc.SchedulerServiceStub(channel)
                if not hasattr(stub, method):
                    stub = pb_grpc.InternalServiceStub(channel)
                meta = (("authorization", f"Bearer {token}"),) if token else None
                answer = getattr(stub, method)(request, timeout=10, metadata=meta)
                return list(answer) if isinstance(request, pb.StreamJobsRequest) else answer
            except grpc.RpcError as error:
                return error
            finally:
                channel.close()

        return threads.deferToThread(blocking)

    def assertCode(self, answer, code: grpc.StatusCode) -> None:
        self.assertIsInstance(answer, grpc.RpcError, answer)
        self.assertEqual(answer.code(), code, answer.details())
        if code != grpc.StatusCode.UNAVAILABLE:
            self.assertEqual(dict(answer.trailing_metadata())[metadata.ERROR_CODE], code.name)

    @defer.inlineCallbacks
    def test_a_client_certificate_and_a_token(self):
        client = self.pki.client()
        request = pb.GetJobStatusRequest(job_id=self.api.jobs[1].job_id)
        reply = yield self.call(client, "GetJobStatus", request, READ)
        self.assertEqual(reply.command, "echo 1")
        self.assertCode(
            (yield self.call(client, "GetJobStatus", request)), grpc.StatusCode.UNAUTHENTICATED
        )
        streamed = yield self.call(client, "StreamJobs", pb.StreamJobsRequest())
        self.assertCode(streamed, grpc.StatusCode.UNAUTHENTICATED)
        streamed = yield self.call(client, "StreamJobs", pb.StreamJobsRequest(), READ)
        self.assertEqual(len(streamed), 3)
        beat = pb.WorkerHeartbeatRequest(node_id=2)
        self.assertCode(
            (yield self.call(client, "WorkerHeartbeat", beat, ADMIN)),
            grpc.StatusCode.PERMISSION_DENIED,
        )

    @defer.inlineCallbacks
    def test_no_connection_without_a_certificate_of_the_ca(self):
        request = pb.GetJobStatusRequest(job_id=self.api.jobs[1].job_id)
        for credentials in (self.pki.no_certificate(), self.pki.foreign_client(), None):
            answer = yield self.call(credentials, "GetJobStatus", request, READ)
            self.assertCode(answer, grpc.StatusCode.UNAVAILABLE)

    @defer.inlineCallbacks
    def test_only_a_peer_may_open_a_stream_of_appends_and_only_as_itself(self):
        request = pb.AppendEntriesRequest(term=1, leader_id=2).SerializeToString()

        def blocking(credentials):
            channel = client_channel(self.address, credentials)
            try:
                call = channel.stream_stream("/scheduler.RaftService/AppendEntriesStream")
                return list(call(iter([request]), timeout=10))
            except grpc.RpcError as error:
                return error
            finally:
                channel.close()

        refused = yield threads.deferToThread(blocking, self.pki.client())
        self.assertCode(refused, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("only cluster nodes", refused.details())
        refused = yield threads.deferToThread(blocking, self.pki.as_node(3))
        self.assertCode(refused, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("node 3 is not a peer", refused.details())

    @defer.inlineCallbacks
    def test_a_malformed_request_of_a_stranger_is_refused_for_who_sent_it(self):
        node3 = self.pki.as_node(3)  # of the CA, but no peer
        raw = pb.GetJobOutputRequest(job_id="ok").SerializeToString().replace(b"ok", b"\xff\xfe")

        def blocking():
            channel = client_channel(self.address, node3)
            try:
                channel.unary_unary("/scheduler.InternalService/GetJobOutput")(raw, timeout=10)
            except grpc.RpcError as error:
                return error
            finally:
                channel.close()

        answer = yield threads.deferToThread(blocking)
        self.assertCode(answer, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("node 3 is not a peer", answer.details())
