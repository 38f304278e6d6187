"""Who is on the other end of a TLS connection: the identity format of jobsched's
certificates, and the checks a node makes of its own (docs/operations.md, "TLS").

- A node certificate carries the SAN URI `jobsched://node/<id>`.
- Every server (node) certificate carries the DNS SAN `jobsched`: nodes and clients
  verify that name (grpc option `grpc.ssl_target_name_override`), so certificates
  need not list IP addresses.
- Any other certificate signed by the cluster's CA is a client.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

SERVER_NAME = "jobsched"
"""The DNS SAN of every node certificate; the name a TLS client verifies."""
NODE_URI_PREFIX = "jobsched://node/"
_NODE_URI = re.compile(r"jobsched://node/([1-9][0-9]{0,18})")
MAX_NODE_ID = 2**63 - 1


class CredentialError(ValueError):
    """A TLS file that cannot serve; `option` names the node option it came from."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")


def node_uri(node_id: int) -> str:
    """The SAN URI naming node `node_id`."""
    return f"{NODE_URI_PREFIX}{node_id}"


def node_id_of(certificate: x509.Certificate) -> int | None:
    """The node id a certificate names (its `jobsched://node/<id>` SAN URI), or None
    for a client certificate. A certificate naming two different nodes names none."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    ids = set()
    for uri in names.value.get_values_for_type(x509.UniformResourceIdentifier):
        match = _NODE_URI.fullmatch(uri)
        if match and int(match.group(1)) <= MAX_NODE_ID:
            ids.add(int(match.group(1)))
    return ids.pop() if len(ids) == 1 else None


@functools.lru_cache(maxsize=256)
def node_id_of_pem(pem: bytes) -> int | None:
    """node_id_of for a PEM certificate as TLS libraries report the peer's (cached: a
    connection's calls all show the same bytes)."""
    return node_id_of(x509.load_pem_x509_certificate(pem))


def dns_names_of(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return names.value.get_values_for_type(x509.DNSName)


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of a CA bundle, a certificate and its private key."""

    ca_cert: bytes
    cert: bytes
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class TlsFiles:
    """Where a node's TLS files are (the options `--ca-cert`, `--cert`, `--key`)."""

    ca_cert: str
    cert: str
    key: str

    def read(self) -> TlsMaterial:
        """The three files' bytes; CredentialError naming the option of one that
        cannot be read."""
        return TlsMaterial(
            _read("--ca-cert", self.ca_cert),
            _read("--cert", self.cert),
            _read("--key", self.key),
        )


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CredentialError(option, f"cannot read {path}: {error.strerror or error}") from None


def check_node_material(material: TlsMaterial, node_id: int, now: datetime.datetime) -> None:
    """Raise CredentialError unless `material` can serve node `node_id` at `now`: the
    CA parses, the certificate was issued by it, is valid now, names this node and the
    server name, and the key is the certificate's."""
    authorities = _load_ca(material.ca_cert)
    certificate = _load_certificate(material.cert)
    if not any(_issued_by(certificate, ca) for ca in authorities):
        raise CredentialError("--cert", "was not issued by --ca-cert")
    if now < certificate.not_valid_before_utc:
        raise CredentialError(
            "--cert", f"is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now > certificate.not_valid_after_utc:
        raise CredentialError(
            "--cert", f"expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    named = node_id_of(certificate)
    if named is None:
        raise CredentialError(
            "--cert",
            f"names no node (SAN URI {NODE_URI_PREFIX}<id>); "
            f"make one with `jobsched certs node --id {node_id}`",
        )
    if named != node_id:
        raise CredentialError("--cert", f"is node {named}'s certificate, not node {node_id}'s")
    if SERVER_NAME not in dns_names_of(certificate):
        raise CredentialError("--cert", f"lacks the DNS name {SERVER_NAME!r} that peers verify")
    _check_key(material.key, certificate)


def _load_ca(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CredentialError("--ca-cert", "holds no PEM certificate") from None


def _load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CredentialError("--cert", "is not a PEM certificate") from None


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_key(pem: bytes, certificate: x509.Certificate) -> None:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CredentialError("--key", "is not an unencrypted PEM private key") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != certificate.public_key().public_bytes(*raw):
        raise CredentialError("--key", "is not the key of --cert")
