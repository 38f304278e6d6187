"""Certificates and tokens for tests and benches, made with `jobsched certs`' own code
into a directory of the test's.

`Pki(directory)` makes a CA (valid two days), node certificates on demand (DNS
`jobsched` and `localhost`, IP 127.0.0.1, so HTTPS by address verifies too) and client
certificates. `node_args()` are the node options of a TLS cluster (`{node_id}` is
filled in by tests.nodeproc.Cluster).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from jobsched.cli.certs import Issued, make_ca, make_client, make_node
from jobsched.identity import TlsMaterial
from jobsched.tokens import Role

TEST_DAYS = 2


@dataclass(frozen=True)
class ClientCredentials:
    """What a test client presents and trusts: a certificate for gRPC (None: none),
    the CA that HTTPS answers are checked against, and a bearer token (None: none)."""

    tls: TlsMaterial | None
    ca_cert: bytes
    token: str | None = None

    def with_token(self, token: str | None) -> ClientCredentials:
        return ClientCredentials(self.tls, self.ca_cert, token)


class Pki:
    """A CA in `directory` and the certificates a test asks for."""

    def __init__(self, directory: Path, ca_name: str = "jobsched test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(ca_name, days=TEST_DAYS)
        self.ca_path = self.directory / "ca.pem"
        self.ca_path.write_bytes(self.ca.cert_pem())

    def node(self, node_id: int) -> tuple[Path, Path]:
        """Node `node_id`'s certificate and key files (made on first use)."""
        cert, key = (
            self.directory / f"node-{node_id}.pem",
            self.directory / f"node-{node_id}-key.pem",
        )
        if not cert.exists():
            issued = make_node(self.ca, node_id, ["localhost"], ["127.0.0.1"], days=TEST_DAYS)
            issued.write(cert, key)
        return cert, key

    def nodes(self, *node_ids: int) -> Pki:
        for node_id in node_ids:
            self.node(node_id)
        return self

    def node_args(self) -> list[str]:
        """Node options for mutual TLS; `{node_id}` stands for each node's id (the
        files must exist: `nodes(...)`)."""
        return [
            "--tls",
            "--ca-cert",
            str(self.ca_path),
            "--cert",
            str(self.directory / "node-{node_id}.pem"),
            "--key",
            str(self.directory / "node-{node_id}-key.pem"),
        ]

    def _material(self, issued: Issued) -> TlsMaterial:
        return TlsMaterial(self.ca.cert_pem(), issued.cert_pem(), issued.key_pem())

    def client(self, name: str = "tester", token: str | None = None) -> ClientCredentials:
        """A client certificate of this CA."""
        issued = make_client(self.ca, name, days=TEST_DAYS)
        return ClientCredentials(self._material(issued), self.ca.cert_pem(), token)

    def as_node(self, node_id: int) -> ClientCredentials:
        """Credentials that present node `node_id`'s certificate (a node, or a thief)."""
        cert, key = self.node(node_id)
        material = TlsMaterial(self.ca.cert_pem(), cert.read_bytes(), key.read_bytes())
        return ClientCredentials(material, self.ca.cert_pem())

    def foreign_client(self) -> ClientCredentials:
        """A client certificate of another CA (which trusts this CA's servers)."""
        other = make_ca("another CA", days=TEST_DAYS)
        issued = make_client(other, "stranger", days=TEST_DAYS)
        material = TlsMaterial(self.ca.cert_pem(), issued.cert_pem(), issued.key_pem())
        return ClientCredentials(material, self.ca.cert_pem())

    def no_certificate(self) -> ClientCredentials:
        """A client that trusts this CA but presents no certificate."""
        return ClientCredentials(None, self.ca.cert_pem())


def new_tokens() -> dict[Role, str]:
    """A fresh token for each role."""
    return {role: f"{role.label}-{secrets.token_hex(16)}" for role in Role}


def write_token_file(path: Path, tokens: dict[Role, str]) -> Path:
    lines = ["# role token"] + [f"{role.label} {token}" for role, token in tokens.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
