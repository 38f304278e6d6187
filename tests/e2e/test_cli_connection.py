"""How the CLI connects, against stand-in nodes (in-process gRPC servers answering
SchedulerService with the production error path): TLS checked against the CA and the
name `jobsched`, mutual TLS, the bearer token, and the leader redirect in every case."""

import datetime
import socket
from concurrent import futures

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.status import error_trailers, grpc_status
from tests.e2e.clirun import parsed, run_cli


class Pem:
    """A key and certificate, as PEM bytes, written to files a test owns."""

    def __init__(self, key, certificate: x509.Certificate) -> None:
        self.key_object = key
        self.certificate = certificate
        self.key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.cert = certificate.public_bytes(serialization.Encoding.PEM)

    def files(self, testcase: unittest.TestCase) -> tuple[str, str]:
        paths = []
        for data in (self.cert, self.key):
            path = testcase.mktemp()
            with open(path, "wb") as pem:
                pem.write(data)
            paths.append(path)
        return paths[0], paths[1]


def _certificate(subject: str, key, issuer: Pem | None, dns_name: str | None, ca: bool):
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns_name:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False
        )
    signer = issuer.key_object if issuer else key
    return builder.sign(signer, hashes.SHA256())


def make_ca(name: str) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    return Pem(key, _certificate(name, key, None, None, ca=True))


def make_leaf(ca: Pem, name: str, dns_name: str | None) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    return Pem(key, _certificate(name, key, ca, dns_name, ca=False))


def refuse(context, error: errors.JobschedError) -> None:
    """End the call as a node does: the status of the error's code, its message, and the
    production trailers (jobsched-error-code, jobsched-leader-address)."""
    context.set_trailing_metadata(error_trailers(error))
    context.abort(grpc_status(error), error.message)


class StandInNode(pb_grpc.SchedulerServiceServicer):
    """Answers SubmitJob as the leader or as a follower (NOT_LEADER, with or without the
    leader's address), and GetClusterStatus with what it is told."""

    def __init__(self, leads: bool, hint: str | None = None, leader: tuple | None = None):
        self.leads = leads
        self.hint = hint
        self.leader = leader  # (leader id, its address), None: no leader known
        self.metadata: list[dict] = []
        self.submitted: list[str] = []

    def SubmitJob(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        if not self.leads:
            refuse(context, errors.NotLeader(self.hint))
        self.submitted.append(request.command)
        return pb.SubmitJobResponse(job_id="00000000-0000-4000-8000-000000000001", created_at_ms=1)

    def GetClusterStatus(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        if self.leader is None:
            refuse(context, errors.NoLeader())
        leader_id, address = self.leader
        return pb.GetClusterStatusResponse(
            current_term=7,
            leader_id=leader_id,
            nodes=[pb.NodeInfo(node_id=leader_id, address=address, is_alive=True)],
        )


class ConnectionTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.ca = make_ca("test CA")
        self.ca_file, _ = self.ca.files(self)

    def serve(self, node: StandInNode, tls: Pem | None = None, client_ca: Pem | None = None):
        """Start a stand-in node; its `host:port`. Stopped in the test's cleanup."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_SchedulerServiceServicer_to_server(node, server)
        if tls is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key, tls.cert)],
                root_certificates=client_ca.cert if client_ca else None,
                require_client_auth=client_ca is not None,
            )
            port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        self.addCleanup(lambda: deferToThread(lambda: server.stop(0).wait(10)))
        return f"127.0.0.1:{port}"

    def assertError(self, result, message: str) -> None:
        self.assertEqual(result.returncode, 1, result)
        self.assertTrue(result.stderr.startswith(f"Error: {message}"), result)
        self.assertNotIn("Traceback", result.stderr)

    async def test_tls_checks_the_node_against_the_ca_and_the_name_jobsched(self):
        node = StandInNode(leads=True, leader=(1, "x:1"))
        address = self.serve(node, tls=make_leaf(self.ca, "node 1", "jobsched"))
        result = await run_cli(
            "-a", f"https://{address}", "--ca-cert", self.ca_file, "cluster", "status", "-o", "json"
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(parsed(result)["current_term"], 7)

    async def test_a_node_certificate_of_another_ca_is_refused(self):
        other = make_ca("another CA")
        address = self.serve(StandInNode(leads=True), tls=make_leaf(other, "node", "jobsched"))
        result = await run_cli(
            "-a", f"https://{address}", "--ca-cert", self.ca_file, "cluster", "status"
        )
        self.assertError(result, f"Cannot reach a jobsched node at https://{address}")

    async def test_a_node_certificate_without_the_name_jobsched_is_refused(self):
        address = self.serve(StandInNode(leads=True), tls=make_leaf(self.ca, "n", "elsewhere"))
        result = await run_cli(
            "-a", f"https://{address}", "--ca-cert", self.ca_file, "cluster", "status"
        )
        self.assertError(result, f"Cannot reach a jobsched node at https://{address}")

    async def test_mutual_tls_sends_the_client_certificate(self):
        node = StandInNode(leads=True, leader=(1, "x:1"))
        address = self.serve(node, tls=make_leaf(self.ca, "node", "jobsched"), client_ca=self.ca)
        base = ["-a", f"https://{address}", "--ca-cert", self.ca_file, "cluster", "status"]
        refused = await run_cli(*base)
        self.assertError(refused, f"Cannot reach a jobsched node at https://{address}")
        cert, key = make_leaf(self.ca, "client", None).files(self)
        accepted = await run_cli(*base, "--cert", cert, "--key", key)
        self.assertEqual(accepted.returncode, 0, accepted)
        self.assertIn("Leader:  node 1", accepted.stdout)

    async def test_the_token_is_sent_as_bearer_metadata(self):
        node = StandInNode(leads=True, leader=(1, "x:1"))
        address = self.serve(node)
        result = await run_cli("-a", address, "cluster", "status", JOBSCHED_TOKEN="from-env")
        self.assertEqual(result.returncode, 0, result)
        result = await run_cli("-a", address, "--token", "s3cret", "cluster", "status")
        self.assertEqual(result.returncode, 0, result)
        tokens = [seen.get("authorization") for seen in node.metadata]
        self.assertEqual(tokens, ["Bearer from-env", "Bearer s3cret"])

    async def test_redirect_follows_the_metadata_address_with_the_same_tls(self):
        certificate = make_leaf(self.ca, "node", "jobsched")
        leader = StandInNode(leads=True)
        leader_address = self.serve(leader, tls=certificate)
        follower = StandInNode(leads=False, hint=leader_address)
        follower_address = self.serve(follower, tls=certificate)
        result = await run_cli(
            "-a", f"https://{follower_address}", "--ca-cert", self.ca_file, "--token", "t",
            "job", "submit", "echo hi",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, f"Redirecting to leader at https://{leader_address}...\n")
        self.assertIn("Job submitted successfully!", result.stdout)
        self.assertEqual(leader.submitted, ["echo hi"])
        self.assertEqual(leader.metadata[0].get("authorization"), "Bearer t")

    async def test_without_an_address_the_cluster_status_names_the_leader(self):
        leader = StandInNode(leads=True)
        leader_address = self.serve(leader)
        follower = StandInNode(leads=False, hint=None, leader=(2, leader_address))
        result = await run_cli("-a", self.serve(follower), "job", "submit", "true")
        self.assertEqual(result.returncode, 0, result)
        self.assertIn(f"Redirecting to leader at http://{leader_address}...", result.stderr)
        self.assertEqual(leader.submitted, ["true"])

    async def test_no_leader_known_is_an_error_with_a_hint(self):
        follower = StandInNode(leads=False, hint=None, leader=None)
        result = await run_cli("-a", self.serve(follower), "job", "submit", "true")
        self.assertEqual(result.returncode, 1, result)
        lines = result.stderr.splitlines()
        self.assertEqual(lines[0], "Error: Not the leader. Leader unknown, retry later")
        self.assertRegex(lines[1], r"^Hint: .* jobsched -a http://\S+:\d+ job submit ")
        self.assertEqual(len(lines), 2, result)

    async def test_a_redirect_happens_only_once(self):
        other = StandInNode(leads=False, hint="127.0.0.1:1")
        other_address = self.serve(other)
        follower = StandInNode(leads=False, hint=other_address)
        result = await run_cli("-a", self.serve(follower), "job", "submit", "true")
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(
            result.stderr.splitlines(),
            [
                f"Redirecting to leader at http://{other_address}...",
                "Error: Not the leader. Try 127.0.0.1:1",
            ],
        )


class SlowNodeTests(unittest.TestCase):
    timeout = 60

    async def test_a_node_slow_to_answer_gets_the_whole_rpc_timeout(self):
        """A node that accepts the connection but is too busy to answer the handshake is
        waited for until --rpc-timeout, not given up on after grpc's reconnect backoff."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel accepts; nobody ever answers
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        result = await run_cli("-a", address, "--rpc-timeout", "2", "cluster", "status")
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(
            result.stderr,
            f"Error: No answer from http://{address} within 2s (see --rpc-timeout)\n",
        )
