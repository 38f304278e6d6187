"""`jobsched certs init|node|client`: a CA and the certificates of a TLS cluster.

Made with `cryptography` in this process (no openssl command). The identity format is
jobsched.identity's: a node certificate carries the SAN URI `jobsched://node/<id>` and
the DNS name `jobsched` (plus any names and addresses given, so that browsers and curl
can check HTTPS by host name); a client certificate names no node.

    jobsched certs init                        # ca.pem, ca-key.pem (10 years)
    jobsched certs node --id 1 --dns node1.example.com --ip 127.0.0.1
    jobsched certs client --name alice         # client-alice.pem, client-alice-key.pem

Keys are ECDSA P-256 unless `--key-type` says otherwise; key files are written with
mode 0600; nothing is overwritten without `--force`.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobsched.identity import MAX_NODE_ID, SERVER_NAME, node_uri

CA_DAYS = 3650
LEAF_DAYS = 365
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-3072")
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Certificates are valid from a little before they are made (clocks differ)."""
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class CertError(Exception):
    """What `jobsched certs` could not do; str() is one line."""


def new_key(key_type: str = "ec-p256"):
    """A private key of `key_type` (one of KEY_TYPES)."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise CertError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: object

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, cert_path: Path, key_path: Path, force: bool = False) -> None:
        """Write both files (the key readable by its owner only)."""
        for path in (cert_path, key_path):
            if path.exists() and not force:
                raise CertError(f"{path} exists (use --force to replace it)")
        _write(key_path, self.key_pem(), 0o600, force)
        _write(cert_path, self.cert_pem(), 0o644, force)

    @classmethod
    def read(cls, cert_path: Path, key_path: Path) -> Issued:
        """A CA (or any certificate and key) from PEM files."""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as error:
            raise CertError(f"cannot read {error.filename}: {error.strerror}") from None
        except (ValueError, TypeError) as error:
            raise CertError(
                f"{cert_path} / {key_path}: not a PEM certificate and key ({error})"
            ) from None
        return cls(cert, key)


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    if force and path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _signing_hash(key) -> hashes.HashAlgorithm:
    """SHA-384 for a P-384 key, else SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def make_ca(
    name: str = "jobsched CA",
    days: int = CA_DAYS,
    key_type: str = "ec-p256",
    now: datetime.datetime | None = None,
) -> Issued:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = new_key(key_type)
    now = now or _now()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _signing_hash(key))
    )
    return Issued(cert, key)


def make_node(
    ca: Issued,
    node_id: int,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = LEAF_DAYS,
    key_type: str = "ec-p256",
    now: datetime.datetime | None = None,
) -> Issued:
    """Node `node_id`'s certificate: server and client, `jobsched://node/<id>`, DNS
    `jobsched` and the names and addresses given."""
    if not 1 <= node_id <= MAX_NODE_ID:
        raise CertError(f"--id must be from 1 to {MAX_NODE_ID} (got {node_id})")
    names: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME)]
    for name in dns_names:
        if not _DNS_NAME.fullmatch(name):
            raise CertError(f"--dns: not a host name: {name!r}")
        if name != SERVER_NAME:
            names.append(x509.DNSName(name))
    for address in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise CertError(f"--ip: not an IP address: {address!r}") from None
    names.append(x509.UniformResourceIdentifier(node_uri(node_id)))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _leaf(ca, f"jobsched node {node_id}", names, usages, days, key_type, now)


def make_client(
    ca: Issued,
    name: str,
    days: int = LEAF_DAYS,
    key_type: str = "ec-p256",
    now: datetime.datetime | None = None,
) -> Issued:
    """A client certificate (common name `name`; it names no node)."""
    if not _CLIENT_NAME.fullmatch(name):
        raise CertError(f"--name: letters, digits, '.', '_' and '-', at most 64 (got {name!r})")
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    return _leaf(ca, name, [], usages, days, key_type, now)


def _leaf(ca, common_name, names, usages, days, key_type, now) -> Issued:
    key = new_key(key_type)
    now = now or _now()
    not_after = min(now + datetime.timedelta(days=days), ca.cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, _signing_hash(ca.key)), key)


# ---------------------------------------------------------------------- the command


def add_parser(commands) -> None:
    """Register `certs` on the `jobsched` command's subparsers."""
    certs = commands.add_parser(
        "certs",
        help="make a CA and node and client certificates for TLS",
        description=__doc__.split("\n\n")[0],
    )
    kinds = certs.add_subparsers(dest="kind", metavar="KIND", required=True)

    init = kinds.add_parser("init", help="make a CA: DIR/ca.pem and DIR/ca-key.pem")
    init.add_argument("--name", default="jobsched CA", help="the CA's common name")
    _common(init, CA_DAYS, with_ca=False)
    init.set_defaults(func=_run_init)

    node = kinds.add_parser("node", help="a node's certificate: DIR/node-ID.pem and -key.pem")
    node.add_argument("--id", type=int, required=True, help="the node id (--node-id)")
    node.add_argument(
        "--dns", action="append", default=[], metavar="NAME", help="a host name (repeatable)"
    )
    node.add_argument(
        "--ip", action="append", default=[], metavar="ADDR", help="an IP address (repeatable)"
    )
    _common(node, LEAF_DAYS, with_ca=True)
    node.set_defaults(func=_run_node)

    client = kinds.add_parser("client", help="a client certificate: DIR/client-NAME.pem")
    client.add_argument("--name", required=True, help="the client's name (its common name)")
    _common(client, LEAF_DAYS, with_ca=True)
    client.set_defaults(func=_run_client)


def _common(parser: argparse.ArgumentParser, days: int, with_ca: bool) -> None:
    parser.add_argument("--dir", default=".", help="where the CA is and the files go [default: .]")
    parser.add_argument("--days", type=int, default=days, help=f"lifetime [default: {days}]")
    parser.add_argument(
        "--key-type", choices=KEY_TYPES, default="ec-p256", help="[default: ec-p256]"
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    if with_ca:
        parser.add_argument("--ca-cert", help="the signing CA's certificate [default: DIR/ca.pem]")
        parser.add_argument("--ca-key", help="the signing CA's key [default: DIR/ca-key.pem]")


def _run_init(args) -> int:
    return _run(args, lambda: make_ca(args.name, args.days, args.key_type), "ca")


def _run_node(args) -> int:
    def issue():
        return make_node(_ca(args), args.id, args.dns, args.ip, args.days, args.key_type)

    return _run(args, issue, f"node-{args.id}")


def _run_client(args) -> int:
    def issue():
        return make_client(_ca(args), args.name, args.days, args.key_type)

    return _run(args, issue, f"client-{args.name}")


def _ca(args) -> Issued:
    directory = Path(args.dir)
    return Issued.read(
        Path(args.ca_cert) if args.ca_cert else directory / "ca.pem",
        Path(args.ca_key) if args.ca_key else directory / "ca-key.pem",
    )


def _run(args, issue, stem: str) -> int:
    directory = Path(args.dir)
    try:
        if args.days < 1:
            raise CertError(f"--days must be at least 1 (got {args.days})")
        directory.mkdir(parents=True, exist_ok=True)
        issued = issue()
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
        issued.write(cert_path, key_path, args.force)
    except (CertError, OSError) as error:
        sys.stderr.write(f"jobsched: error: {error}\n")
        return 1
    until = issued.cert.not_valid_after_utc.strftime("%Y-%m-%d")
    print(f"wrote {cert_path} and {key_path} (valid until {until})")
    return 0
