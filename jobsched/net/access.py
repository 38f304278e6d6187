"""Who may call what on a node's gRPC port (API.md §2.10, docs/operations.md).

With TLS the caller is the certificate it presented: a node certificate
(`jobsched://node/<id>`) or, any other, a client. RaftService and InternalService
take calls only from a configured peer's node certificate, and a message that claims
a node id (a heartbeat's node_id, a result's executed_by, a leader_id, a
candidate_id) must claim the id of that certificate. SchedulerService takes calls
from peers (a follower forwarding for a client it has already checked) and from
clients: without tokens any client, with tokens the token's role decides.

Without TLS no caller is authenticated; a claimed node id must still be a configured
peer, which stops mistakes (a node of another cluster), not attackers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import Message

from jobsched import errors
from jobsched.identity import node_id_of, node_id_of_pem
from jobsched.tokens import Role, TokenStore

SCHEDULER = "/scheduler.SchedulerService/"
INTERNAL = "/scheduler.InternalService/"
RAFT = "/scheduler.RaftService/"

SCHEDULER_ROLES: dict[str, Role] = {
    "GetJobStatus": Role.READ,
    "ListJobs": Role.READ,
    "StreamJobs": Role.READ,
    "StreamJobOutput": Role.READ,
    "GetClusterStatus": Role.READ,
    "GetRaftLogEntries": Role.READ,
    "SubmitJob": Role.SUBMIT,
    "SubmitJobs": Role.SUBMIT,
    "CancelJob": Role.SUBMIT,
    "TransferLeadership": Role.ADMIN,
    "DrainNode": Role.ADMIN,
}
"""The role a token needs for each SchedulerService method."""

NODE_CLAIMS: dict[str, Callable[[Message], Iterable[int]]] = {
    RAFT + "RequestVote": lambda request: [request.candidate_id],
    RAFT + "AppendEntries": lambda request: [request.leader_id],
    RAFT + "AppendEntriesStream": lambda request: [request.leader_id],
    RAFT + "TimeoutNow": lambda request: [request.leader_id],
    RAFT + "InstallSnapshot": lambda request: [request.leader_id],
    INTERNAL + "WorkerHeartbeat": lambda request: [request.node_id],
    INTERNAL + "ForwardJobStatus": lambda request: {u.executed_by for u in request.updates},
    INTERNAL + "GetJobOutput": lambda request: [],
    INTERNAL + "ReadJobOutput": lambda request: [],
}
"""The node ids each node-to-node method's request claims to come from."""

AUTHORIZATION = "authorization"
"""The gRPC metadata key of a bearer token (`Bearer <token>`)."""


@dataclass(frozen=True)
class Caller:
    """Who called: `certified` when a verified certificate came with the call (then
    `node_id` is the node it names, or None for a client certificate)."""

    certified: bool
    node_id: int | None = None
    authorization: str | None = None

    @classmethod
    def of(cls, context) -> Caller:
        """The caller of a call, from a grpc.aio ServicerContext."""
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == AUTHORIZATION:
                authorization = value
        certificates = context.auth_context().get("x509_pem_cert")
        if not certificates:
            return cls(False, None, authorization)
        return cls(True, node_id_of_pem(certificates[0]), authorization)

    @classmethod
    def of_connection(cls, transport) -> Caller:
        """The other end of a peer-port connection (TCP, or TLS with its certificate)."""
        certificate = getattr(transport, "getPeerCertificate", lambda: None)()
        if certificate is None:
            return cls(False)
        return cls(True, node_id_of(certificate.to_cryptography()))


class AccessPolicy:
    """Decides each call (see the module docstring); `check` raises the typed error
    of a refused one."""

    def __init__(
        self,
        peers: Iterable[int],
        tls: bool,
        tokens: TokenStore | None = None,
    ) -> None:
        self._peers = frozenset(peers)
        self._tls = tls
        self._tokens = tokens

    def knows(self, method: str) -> bool:
        """Whether there is a rule for `method` (a method without one is refused)."""
        return method in NODE_CLAIMS or _scheduler_method(method) in SCHEDULER_ROLES

    def admits_anyone(self, method: str) -> bool:
        """Whether every call of `method` is let through whoever makes it (a
        SchedulerService method when no tokens are required): no need to check."""
        return self._tokens is None and _scheduler_method(method) in SCHEDULER_ROLES

    def check(self, method: str, caller: Caller, request: object) -> None:
        """Return if `caller` may make this call; else raise Unauthenticated or
        PermissionDenied. `request` is the decoded request (its claims are checked
        only when it is a message)."""
        if method in NODE_CLAIMS:
            self._check_node_call(method, caller, request)
        elif _scheduler_method(method) in SCHEDULER_ROLES:
            self._check_client_call(SCHEDULER_ROLES[_scheduler_method(method)], caller)
        else:
            raise errors.PermissionDenied(f"Permission denied: no access rule for {method}")

    def _check_node_call(self, method: str, caller: Caller, request: object) -> None:
        if self._tls:
            if not caller.certified or caller.node_id is None:
                raise errors.PermissionDenied(
                    "Permission denied: only cluster nodes may call this (client certificate)"
                )
            if caller.node_id not in self._peers:
                raise errors.PermissionDenied(
                    f"Permission denied: node {caller.node_id} is not a peer of this node"
                )
        if not isinstance(request, Message):
            return  # undecodable: refused as such by the handler
        for claimed in NODE_CLAIMS[method](request):
            if self._tls and claimed != caller.node_id:
                raise errors.PermissionDenied(
                    f"Permission denied: node {caller.node_id}'s certificate "
                    f"cannot speak for node {claimed}"
                )
            if claimed not in self._peers:
                raise errors.PermissionDenied(
                    f"Permission denied: node {claimed} is not a peer of this node"
                )

    def _check_client_call(self, needed: Role, caller: Caller) -> None:
        if caller.certified and caller.node_id in self._peers:
            return  # a peer, forwarding for a client it has checked
        if self._tokens is not None:
            self._tokens.authorize(caller.authorization, needed)


def _scheduler_method(method: str) -> str | None:
    return method[len(SCHEDULER) :] if method.startswith(SCHEDULER) else None
