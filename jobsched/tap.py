"""The twistd plugin's options and service: `twistd -n jobsched [options]`.

Nothing here imports the reactor or klein at module level (STACK-NOTES pitfall 1); the
node is imported only in makeService, after the options are valid.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields

from twisted.application.service import IService
from twisted.python import usage

from jobsched import collector, logs
from jobsched.config import ConfigError, NodeConfig

_DOCS = {
    "node-id": "unique node id (1..2^63-1)",
    "host": "address to bind the gRPC and REST servers",
    "port": "gRPC port",
    "dashboard-port": "REST + dashboard port (0 = off)",
    "peer-port": "port on which the leader sends this node its entries, framed on TCP "
    "(mutual TLS with --tls); 0 = a free port, told to the leader; off = gRPC only "
    "[default: 0]",
    "advertise-peer-port": "the peer port this node names to its leader when it is "
    "reached on another port than it binds (port forwarding, a proxy) "
    "[default: the port bound]",
    "peers": "the other nodes as id:host:port,... (IPv6 as id:[addr]:port)",
    "advertise-addr": "this node's gRPC address as its cluster status shows it to clients "
    "(peers dial the addresses in their own --peers) [default: host:port]",
    "data-dir": "durable storage directory [default: none, state kept in memory]",
    "executor": "job executor: docker or process (development only, no isolation)",
    "image": "default job image (the process executor records it but runs no image)",
    "allowed-images": "comma-separated glob patterns of images jobs may use [default: any]",
    "job-timeout": "default per-job timeout, seconds",
    "max-job-timeout": "maximum per-job timeout a client may ask for, seconds",
    "worker-slots": "jobs this node runs at once",
    "max-output-bytes": "bytes of stdout and of stderr kept per job",
    "ca-cert": "CA certificate(s) (PEM) that issued the nodes' and clients' certificates",
    "cert": "this node's certificate (PEM, SAN URI jobsched://node/<id> and DNS jobsched)",
    "key": "this node's private key (PEM, unencrypted)",
    "auth-token-file": "bearer tokens with roles, lines `ROLE TOKEN` (admin, submit, read); "
    "needs --tls; re-read on SIGHUP [default: none, no tokens]",
    "election-timeout-min": "lower bound of the random election timeout, ms",
    "election-timeout-max": "upper bound of the random election timeout, ms",
    "heartbeat-interval": "leader heartbeat interval, ms",
    "log-format": "log format: text or json",
    "worker-expiry": "seconds of silence after which a worker's jobs are requeued",
    "max-attempts": "attempts of a job before a lost worker fails it",
    "stream-stall-timeout": "seconds a server stream may wait on a reader that reads "
    "nothing before it is dropped",
    "max-active-jobs": "pending plus running jobs the leader accepts before it refuses "
    "submissions (CAPACITY)",
}

_FLAGS = {
    "tls": "mutual TLS for all gRPC, HTTPS for REST and the dashboard (needs --ca-cert, "
    "--cert and --key)"
}


def _parameters() -> list[list[str | None]]:
    """optParameters from NodeConfig's fields: defaults are shown in the help text only,
    so that NodeConfig stays the one place that holds them."""
    parameters: list[list[str | None]] = []
    for f in fields(NodeConfig):
        name = f.name.replace("_", "-")
        if name in _FLAGS:
            continue
        doc = _DOCS[name]
        if "[default:" not in doc and f.default not in (MISSING, None, "", ()):
            doc = f"{doc} [default: {f.default}]"
        parameters.append([name, None, None, doc])
    return parameters


class Options(usage.Options):
    """Server options. A bad option ends the process with one line on stderr, exit 2,
    instead of twistd's full usage text."""

    synopsis = "[options]"
    longdesc = "Run one jobsched cluster node: Raft, the gRPC and REST APIs and a worker."
    optFlags = [[name, None, doc] for name, doc in _FLAGS.items()]
    optParameters = _parameters()

    config: NodeConfig
    opt_h = usage.Options.opt_help

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigError) as e:
            sys.stderr.write(f"jobsched: error: {e}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r} (all settings are --options)")

    def postOptions(self) -> None:
        self.config = NodeConfig.from_options(self)
        logs.install(self.parent, self.config.log_format)


def makeService(options: Options) -> IService:
    """The node's top-level service, built from the validated options."""
    from jobsched.node import NodeService

    node = NodeService(options.config)
    collector.settle_after_start_up()
    return node
