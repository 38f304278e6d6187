"""NodeConfig: the server options of one node, parsed and validated (BEHAVIOUR.md §7).

Every field `some_name` is the option `--some-name`. A bad value raises ConfigError, whose
text is one line naming the option, so that start-up can stop with a clear message.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from jobsched.identity import MAX_NODE_ID, CredentialError, TlsFiles, check_node_material
from jobsched.images import image_allowed, is_valid_image_reference
from jobsched.tokens import TokenFileError, read_tokens

MAX_CLUSTER_SIZE = 7
EXECUTORS = ("docker", "process")
LOG_FORMATS = ("text", "json")
MAX_ATTEMPTS_LIMIT = 10
"""The most attempts a job may make (the option and the per-job setting)."""

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


class ConfigError(ValueError):
    """A bad server option; str() is one line, e.g. `--port: must be ... (got 'abc')`."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")


class PeerAddress(NamedTuple):
    """Where a node is dialled; `host` is bare (an IPv6 address without brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_address(self.host, self.port)


def format_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets (`[::1]:50051`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def option_name(field_name: str) -> str:
    """The command-line option of a NodeConfig field: `node_id` -> `--node-id`."""
    return "--" + field_name.replace("_", "-")


@dataclass(frozen=True)
class NodeConfig:
    """Validated options of one node. Build it with `from_options` from option text, or
    directly with typed values (checked the same way, in `__post_init__`)."""

    node_id: int = 1
    host: str = "127.0.0.1"
    port: int = 50051
    dashboard_port: int = 8081
    peer_port: int | None = 0
    advertise_peer_port: int = 0
    peers: Mapping[int, PeerAddress] = field(default_factory=dict, hash=False)
    advertise_addr: str = ""
    data_dir: str | None = None
    executor: str = "docker"
    image: str = "alpine:latest"
    allowed_images: tuple[str, ...] = ()
    job_timeout: int = 30
    max_job_timeout: int = 3600
    worker_slots: int = 4
    max_output_bytes: int = 65536
    tls: bool = False
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    auth_token_file: str | None = None
    election_timeout_min: int = 150
    election_timeout_max: int = 300
    heartbeat_interval: int = 50
    log_format: str = "text"
    worker_expiry: float = 5.0
    max_attempts: int = 3
    stream_stall_timeout: float = 30.0
    max_active_jobs: int = 10_000

    def __post_init__(self) -> None:
        _check_int("--node-id", self.node_id, 1, MAX_NODE_ID)
        self._check_addresses()
        _check_choice("--executor", self.executor, EXECUTORS)
        self._check_images()
        _check_int("--job-timeout", self.job_timeout, 1)
        _check_int("--max-job-timeout", self.max_job_timeout, 1)
        if self.job_timeout > self.max_job_timeout:
            raise ConfigError(
                "--job-timeout",
                f"must not exceed --max-job-timeout ({self.max_job_timeout}) "
                f"(got {self.job_timeout})",
            )
        _check_int("--worker-slots", self.worker_slots, 1)
        _check_int("--max-output-bytes", self.max_output_bytes, 1)
        self._check_tls()
        self._check_token_file()
        self._check_timings()
        _check_choice("--log-format", self.log_format, LOG_FORMATS)
        _check_int("--max-attempts", self.max_attempts, 1, MAX_ATTEMPTS_LIMIT)
        _check_int("--max-active-jobs", self.max_active_jobs, 1)
        if self.data_dir is not None and os.path.exists(self.data_dir):  # noqa: SIM102
            if not os.path.isdir(self.data_dir):
                raise ConfigError("--data-dir", f"not a directory: {self.data_dir}")

    def _check_addresses(self) -> None:
        """Ports, host, advertise address (normalised) and peers."""
        object.__setattr__(self, "host", _parse_host("--host", self.host))
        _check_int("--port", self.port, 1, 65535)
        _check_int("--dashboard-port", self.dashboard_port, 0, 65535)
        if self.dashboard_port == self.port:
            raise ConfigError("--dashboard-port", f"must differ from --port ({self.port})")
        if self.peer_port is not None:
            _check_int("--peer-port", self.peer_port, 0, 65535)
            if self.peer_port and self.peer_port in (self.port, self.dashboard_port):
                raise ConfigError("--peer-port", "must differ from --port and --dashboard-port")
        _check_int("--advertise-peer-port", self.advertise_peer_port, 0, 65535)
        if self.advertise_peer_port and self.peer_port is None:
            raise ConfigError("--advertise-peer-port", "needs a peer port (not --peer-port off)")
        advertise = self.advertise_addr or format_address(self.host, self.port)
        advertised = parse_address("--advertise-addr", advertise)
        object.__setattr__(self, "advertise_addr", str(advertised))
        if self.node_id in self.peers:
            raise ConfigError(
                "--peers", f"lists this node's own id {self.node_id}; list only the other nodes"
            )
        if self.cluster_size > MAX_CLUSTER_SIZE:
            raise ConfigError(
                "--peers",
                f"a cluster has at most {MAX_CLUSTER_SIZE} nodes (got {self.cluster_size})",
            )
        seen = {advertised: self.node_id}
        for peer_id, address in self.peers.items():
            _check_int("--peers", peer_id, 1, MAX_NODE_ID)
            if address in seen:
                raise ConfigError(
                    "--peers", f"nodes {seen[address]} and {peer_id} share the address {address}"
                )
            seen[address] = peer_id

    def _check_images(self) -> None:
        if not is_valid_image_reference(self.image):
            raise ConfigError("--image", f"invalid image reference {self.image!r}")
        for pattern in self.allowed_images:
            if not pattern or pattern != pattern.strip():
                raise ConfigError("--allowed-images", f"empty or padded pattern {pattern!r}")
        if not image_allowed(self.image, self.allowed_images):
            raise ConfigError("--image", f"{self.image!r} is not allowed by --allowed-images")

    def _check_tls(self) -> None:
        files = {"--ca-cert": self.ca_cert, "--cert": self.cert, "--key": self.key}
        for option, path in files.items():
            if not self.tls:
                if path:
                    raise ConfigError(option, "given without --tls (add --tls for mutual TLS)")
            elif not path:
                raise ConfigError(option, "required with --tls")
            elif not os.path.isfile(path):
                raise ConfigError(option, f"no such file: {path}")
        if self.tls_files is not None:
            try:
                material = self.tls_files.read()
                now = datetime.datetime.now(datetime.UTC)
                check_node_material(material, self.node_id, now)
            except CredentialError as error:
                raise ConfigError(error.option, error.message) from None

    def _check_token_file(self) -> None:
        if self.auth_token_file is None:
            return
        if not self.tls:
            raise ConfigError(
                "--auth-token-file",
                "needs --tls (without TLS tokens travel in clear and other nodes "
                "cannot be told from clients)",
            )
        try:
            tokens = read_tokens(self.auth_token_file)
        except TokenFileError as error:
            raise ConfigError("--auth-token-file", str(error)) from None
        if not tokens:
            raise ConfigError("--auth-token-file", f"holds no token: {self.auth_token_file}")

    def _check_timings(self) -> None:
        _check_int("--election-timeout-min", self.election_timeout_min, 1)
        _check_int("--election-timeout-max", self.election_timeout_max, 1)
        _check_int("--heartbeat-interval", self.heartbeat_interval, 1)
        if self.election_timeout_min >= self.election_timeout_max:
            raise ConfigError(
                "--election-timeout-max",
                f"must be greater than --election-timeout-min ({self.election_timeout_min}) "
                f"(got {self.election_timeout_max})",
            )
        if self.heartbeat_interval >= self.election_timeout_min:
            raise ConfigError(
                "--heartbeat-interval",
                f"must be less than --election-timeout-min ({self.election_timeout_min}) "
                f"(got {self.heartbeat_interval})",
            )
        _check_seconds("--worker-expiry", self.worker_expiry)
        _check_seconds("--stream-stall-timeout", self.stream_stall_timeout)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> NodeConfig:
        """Parse option text keyed by option name without dashes (`node-id`), as twisted's
        usage.Options holds it; a missing or None value takes the default. A --data-dir
        that does not exist yet is created."""
        known = {f.name.replace("_", "-"): f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in options.items():
            name = known.get(key)
            if name is None:
                raise ConfigError(f"--{key}", "unknown option")
            if raw is not None:
                values[name] = _PARSERS.get(name, _parse_str)(option_name(name), raw)
        config = cls(**values)
        if config.data_dir is not None:
            _prepare_data_dir(config.data_dir)
        return config

    @property
    def cluster_size(self) -> int:
        return len(self.peers) + 1

    @property
    def tls_files(self) -> TlsFiles | None:
        """The node's TLS files with --tls, else None."""
        if not self.tls:
            return None
        return TlsFiles(self.ca_cert, self.cert, self.key)


def parse_address(option: str, text: str) -> PeerAddress:
    """`host:port` or `[ipv6]:port` -> PeerAddress, else ConfigError naming `option`."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(option, f"expected [ipv6]:port (got {text!r})")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(option, f"invalid IPv6 address {host!r} in {text!r}") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(option, f"expected host:port (got {text!r})")
        if ":" in host:
            raise ConfigError(option, f"put IPv6 addresses in brackets, [addr]:port (got {text!r})")
        if not _HOSTNAME.fullmatch(host):
            raise ConfigError(option, f"invalid host {host!r} in {text!r}")
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ConfigError(option, f"port must be from 1 to 65535 (got {port!r} in {text!r})")
    return PeerAddress(host, int(port))


def parse_peers(text: str, option: str = "--peers") -> dict[int, PeerAddress]:
    """`id:host:port,...` (IPv6 as `id:[addr]:port`) -> {id: PeerAddress}; "" -> {}."""
    peers: dict[int, PeerAddress] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        raw_id, sep, address = entry.partition(":")
        if not sep:
            raise ConfigError(option, f"expected id:host:port (got {entry!r})")
        peer_id = _parse_int(option, raw_id, 1, MAX_NODE_ID, context=f"node id in {entry!r}")
        if peer_id in peers:
            raise ConfigError(option, f"node id {peer_id} appears twice")
        try:
            peers[peer_id] = parse_address(option, address)
        except ConfigError as e:
            raise ConfigError(option, f"entry {entry!r}: {e.message}") from None
    return peers


def _parse_host(option: str, host: str) -> str:
    """A bind host: IPv4, IPv6 (brackets optional, kept bare) or a host name."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise ConfigError(option, f"invalid host {host!r}")
    return host


def _positive(value: float) -> bool:
    return value > 0 and math.isfinite(value)


def _int_range(low: int, high: int | None) -> str:
    if high is None:
        return f"must be an integer of at least {low}"
    return f"must be an integer from {low} to {high}"


def _check_int(option: str, value: Any, low: int, high: int | None = None) -> None:
    in_range = isinstance(value, int) and low <= value and (high is None or value <= high)
    if isinstance(value, bool) or not in_range:
        raise ConfigError(option, f"{_int_range(low, high)} (got {value!r})")


def _check_seconds(option: str, value: Any) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not _positive(value):
        raise ConfigError(option, f"must be a positive number of seconds (got {value!r})")


def _check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(option, f"must be one of {', '.join(choices)} (got {value!r})")


def _parse_int(option: str, raw: Any, low: int, high: int | None = None, context: str = "") -> int:
    text = str(raw).strip()
    value = int(text) if re.fullmatch(r"[0-9]{1,20}", text) else None
    if value is None or value < low or (high is not None and value > high):
        prefix = f"{context}: " if context else ""
        raise ConfigError(option, f"{prefix}{_int_range(low, high)} (got {text!r})")
    return value


def _parse_positive_int(option: str, raw: Any) -> int:
    return _parse_int(option, raw, 1)


def _parse_peer_port(option: str, raw: Any) -> int | None:
    """A port, 0 (any free port) or `off` (None: no peer port, AppendEntries on gRPC)."""
    if str(raw).strip() == "off":
        return None
    return _parse_int(option, raw, 0, 65535, context="a port, 0 or off")


def _parse_seconds(option: str, raw: Any) -> float:
    text = str(raw).strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not _positive(value):
        raise ConfigError(option, f"must be a positive number of seconds (got {text!r})")
    return value


def _parse_flag(option: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text not in ("0", "1", "true", "false"):
        raise ConfigError(option, f"is a flag: expected true or false (got {raw!r})")
    return text in ("1", "true")


def _parse_str(option: str, raw: Any) -> str:
    return str(raw).strip()


def _parse_path(option: str, raw: Any) -> str | None:
    text = str(raw).strip()
    return text or None


def _parse_data_dir(option: str, raw: Any) -> str | None:
    text = str(raw).strip()
    return os.path.abspath(text) if text else None


def _parse_patterns(option: str, raw: Any) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(raw).split(",") if part.strip())


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "node_id": lambda option, raw: _parse_int(option, raw, 1, MAX_NODE_ID),
    "port": lambda option, raw: _parse_int(option, raw, 1, 65535),
    "dashboard_port": lambda option, raw: _parse_int(option, raw, 0, 65535),
    "peer_port": _parse_peer_port,
    "advertise_peer_port": lambda option, raw: _parse_int(option, raw, 0, 65535),
    "peers": lambda option, raw: parse_peers(str(raw), option),
    "data_dir": _parse_data_dir,
    "allowed_images": _parse_patterns,
    "job_timeout": _parse_positive_int,
    "max_job_timeout": _parse_positive_int,
    "worker_slots": _parse_positive_int,
    "max_output_bytes": _parse_positive_int,
    "tls": _parse_flag,
    "ca_cert": _parse_path,
    "cert": _parse_path,
    "key": _parse_path,
    "auth_token_file": _parse_path,
    "election_timeout_min": _parse_positive_int,
    "election_timeout_max": _parse_positive_int,
    "heartbeat_interval": _parse_positive_int,
    "worker_expiry": _parse_seconds,
    "stream_stall_timeout": _parse_seconds,
    "max_attempts": lambda option, raw: _parse_int(option, raw, 1, MAX_ATTEMPTS_LIMIT),
    "max_active_jobs": _parse_positive_int,
}


def _prepare_data_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError("--data-dir", f"cannot create {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError("--data-dir", f"not writable: {path}")
