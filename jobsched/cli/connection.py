"""The client's link to one node: where (`--addr`), how (TLS, token, deadlines), and the
translation of a failed call into a typed error.

A node's error carries its code in trailing metadata (`jobsched-error-code`); it becomes
the matching class of jobsched.errors through `errors.from_code`, never by reading the
message. A call that failed on the way (nothing listening, TLS refused, no answer in
time) carries no code and becomes a CliFailure naming the address.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc

from jobsched import errors
from jobsched._proto import scheduler_pb2_grpc
from jobsched.cli.failures import CliFailure, UsageFailure
from jobsched.net import metadata
from jobsched.net.client_channel import ClientTls, open_client_channel

DEFAULT_ADDRESS = "http://127.0.0.1:50051"
DEFAULT_PORT = 50051
ADDRESS_VARIABLE = "JOBSCHED_ADDR"
TOKEN_VARIABLE = "JOBSCHED_TOKEN"

DEFAULT_RPC_TIMEOUT = 15.0
RPC_TIMEOUTS = {
    "DrainNode": 90.0,  # the node waits up to 60 s for its running jobs
    "StreamJobs": 120.0,  # the whole stream
}
"""Seconds each call may take unless `--rpc-timeout` says otherwise."""


@dataclass(frozen=True)
class Target:
    """A node's address as the user wrote it: `http://` plaintext, `https://` TLS."""

    scheme: str
    host_port: str

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_port}"

    def at(self, host_port: str) -> Target:
        """The same scheme at another node (the leader a follower named)."""
        return Target(self.scheme, host_port)


def parse_address(text: str) -> Target:
    """`http://HOST[:PORT]`, `https://HOST[:PORT]` or a bare `HOST[:PORT]` (plaintext)."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise UsageFailure(
            f"Invalid address '{text}': use http://HOST:PORT, or https://HOST:PORT for TLS"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageFailure(f"Invalid address '{text}': give only a scheme, host and port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Target(parts.scheme, f"{host}:{port}")


def _read_pem(path: str | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as pem:
            return pem.read()
    except OSError as error:
        raise CliFailure(f"Cannot read {option} {path}: {error.strerror}") from None


@dataclass(frozen=True)
class ClientSettings:
    """The client options of one command, resolved against the environment."""

    target: Target
    tls: ClientTls | None
    token: str | None
    rpc_timeout: float | None

    @classmethod
    def from_options(cls, options, environ: Mapping[str, str] = os.environ) -> ClientSettings:
        """From the parsed client options (`addr`, `ca_cert`, `cert`, `key`, `token`,
        `rpc_timeout`), with `$JOBSCHED_ADDR` and `$JOBSCHED_TOKEN` as defaults."""
        target = parse_address(options.addr or environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS)
        tls_files = (options.ca_cert, options.cert, options.key)
        if not target.tls and any(tls_files):
            raise UsageFailure("--ca-cert, --cert and --key need an https:// address")
        if (options.cert is None) != (options.key is None):
            raise UsageFailure("--cert and --key go together")
        tls = None
        if target.tls:
            tls = ClientTls(
                root_certificates=_read_pem(options.ca_cert, "--ca-cert"),
                certificate_chain=_read_pem(options.cert, "--cert"),
                private_key=_read_pem(options.key, "--key"),
            )
        if options.rpc_timeout is not None and options.rpc_timeout <= 0:
            raise UsageFailure("--rpc-timeout must be a positive number of seconds")
        token = options.token if options.token is not None else environ.get(TOKEN_VARIABLE)
        return cls(target, tls, token or None, options.rpc_timeout)

    def timeout_for(self, method: str) -> float:
        if self.rpc_timeout is not None:
            return self.rpc_timeout
        return RPC_TIMEOUTS.get(method, DEFAULT_RPC_TIMEOUT)


class Connection:
    """SchedulerService on one node, called synchronously (the CLI runs no reactor)."""

    def __init__(self, settings: ClientSettings, target: Target | None = None) -> None:
        self.settings = settings
        self.target = target or settings.target
        self._channel = open_client_channel(self.target.host_port, settings.tls)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _metadata(self) -> list[tuple[str, str]]:
        token = self.settings.token
        return [("authorization", f"Bearer {token}")] if token else []

    def call(self, method: str, request):
        """One unary call; a typed JobschedError or a CliFailure when it fails."""
        timeout = self.settings.timeout_for(method)
        try:
            return getattr(self._stub, method)(request, timeout=timeout, metadata=self._metadata())
        except grpc.RpcError as error:
            raise self._translate(error, timeout) from None

    def stream(self, method: str, request, follow: bool = False) -> Iterator:
        """The messages of a server stream, failing as `call` does. A stream that
        `follow`s something (a running job's output) has no deadline."""
        timeout = None if follow else self.settings.timeout_for(method)
        try:
            yield from getattr(self._stub, method)(
                request, timeout=timeout, metadata=self._metadata()
            )
        except grpc.RpcError as error:
            raise self._translate(error, timeout) from None

    def _translate(self, error: grpc.RpcError, timeout: float) -> Exception:
        trailers = dict(error.trailing_metadata() or ())
        details = error.details() or error.code().name
        code = trailers.get(metadata.ERROR_CODE)
        if code is not None:
            return errors.from_code(code, details, trailers.get(metadata.LEADER_ADDRESS))
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            return CliFailure(f"Cannot reach a jobsched node at {self.target.url}: {details}")
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliFailure(
                f"No answer from {self.target.url} within {timeout:g}s (see --rpc-timeout)"
            )
        return CliFailure(f"{details} (from {self.target.url})")
