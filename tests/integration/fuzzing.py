"""What test_fuzz_api sends and how it judges the answers: hypothesis strategies for
REST calls and SchedulerService requests, blocking clients, and the checks.

Nothing generated runs on the test machine: the only command text ever generated is
`harmless_commands`, no other generated JSON object or message has a `command` field,
and a guard (`carries_harmful_command`, `decodes_to_harmful_command`) refuses to send
anything the server could read another command from.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import zlib
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st

from jobsched._proto import scheduler_pb2 as pb
from jobsched.errors import CODES

EXAMPLES = int(os.environ.get("JOBSCHED_FUZZ_EXAMPLES") or 20)
BASE_SEED = int(os.environ.get("JOBSCHED_FUZZ_SEED") or 0)
REQUEST_TIMEOUT = 20.0
SUBMIT_WEIGHT = 3

SERVICE = pb.DESCRIPTOR.services_by_name["SchedulerService"]
EFFECTFUL_METHODS = {"TransferLeadership", "DrainNode"}
EFFECTFUL_ROUTES = {"/api/cluster/transfer-leader", "/api/nodes/self/drain"}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
QUERY_PARAMETERS = {
    "/api/jobs": [
        "status",
        "worker",
        "command",
        "created_after_ms",
        "created_before_ms",
        "limit",
        "page_token",
    ],
    "/api/raft/log": ["start_index", "limit"],
    "/api/jobs/<string:job_id>/output": ["follow", "attempt", "stdout_offset", "stderr_offset"],
}
SUBMIT_FIELDS = ["image", "timeout_seconds", "idempotency_key", "max_attempts"]
MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_CHARS = 12_000  # a longer request line is refused by the HTTP layer itself
MAX_JOB_TIMEOUT = 600  # the fuzzed clusters' --max-job-timeout
NO_JOB = "00000000-0000-0000-0000-000000000000"
CONTENT_TYPES = [
    None,
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]

REST_CODES = CODES | {"TRANSFER_FAILED", "DRAIN_FAILED"}
AVAILABILITY_CODES = {"NO_LEADER", "NOT_LEADER", "UNAVAILABLE", "COMMIT_TIMEOUT"}
FINISHED = {"completed", "failed", "cancelled"}


def fuzz(target: str, examples: int = EXAMPLES):
    """@given's settings for one target: a seed of its own (reproducible; another
    JOBSCHED_FUZZ_SEED, another run), no time limit per example (a busy machine), no
    health checks (the examples are slow by nature), the first bug only."""

    def decorate(test):
        test = settings(
            max_examples=examples,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            report_multiple_bugs=False,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
        )(test)
        return seed(BASE_SEED ^ zlib.crc32(target.encode()))(test)

    return decorate


# ---------------------------------------------------------------------- values

HARMLESS = re.compile(r": '[^']*'", re.DOTALL)


def harmless_commands() -> st.SearchStrategy[str]:
    """`: '<text>'` and nothing else: `:` is the shell's no-op and a single-quoted word
    is not expanded, so `sh -c` runs nothing whatever the text (which never holds a
    quote). Long texts cross the 1024-byte limit; NUL and odd characters are in."""
    text = st.text(st.characters(exclude_characters="'"), max_size=400)
    return text.map(lambda t: f": '{t}'")


def carries_harmful_command(value) -> bool:
    """Whether a decoded JSON value holds a `command` string `harmless_commands` did
    not make (iterative: bodies nest deeply)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            command = item.get("command")
            if isinstance(command, str) and not HARMLESS.fullmatch(command):
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def decoded_json(body: bytes | None):
    """The body as the server's JSON parser reads it, or None."""
    try:
        return json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


def invalid_utf8() -> st.SearchStrategy[bytes]:
    """Bytes that are never UTF-8, with bytes around them."""
    part = st.binary(max_size=8)
    bad = st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"])
    return st.tuples(part, bad, part).map(b"".join)


BOUNDARIES = [
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**30,
]


def huge_integers() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(BOUNDARIES), st.integers(-(2**70), 2**70))


def integer_texts() -> st.SearchStrategy[bytes]:
    """What a client may send where an integer is expected: integers of any size (more
    digits than Python converts, too), and digits that are not quite integers."""
    odd = [b"", b"+1", b"01", b" 1", b"1 ", b"1e3", b"0x10", b"1.5", b"-0", b"NaN"]
    odd += ["\uff11\uff12".encode(), "\u0663".encode(), b"18446744073709551616"]
    return st.one_of(
        huge_integers().map(lambda n: str(n).encode()),
        st.sampled_from(odd),
        st.sampled_from([4300, 4301, 6000]).map(lambda n: b"9" * n),
    )


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "a" * 300, "\u0000"]))


def json_keys() -> st.SearchStrategy[str]:
    """Keys of generated JSON objects: any text but `command`."""
    known = st.sampled_from(["image", "timeout_seconds", "jobs", "target_node_id", "x"])
    return st.one_of(known, st.text(max_size=12)).filter(lambda key: key != "command")


def json_values() -> st.SearchStrategy:
    scalars = st.one_of(
        st.none(), st.booleans(), st.floats(), huge_integers(), texts(), harmless_commands()
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(json_keys(), inner, max_size=4)
        ),
        max_leaves=12,
    )


FALSY_AND_ODD = [None, False, True, 0, 0.0, 1.5, "", "0", [], {}, [0], {"x": 0}]


def wrong_types(of: type) -> st.SearchStrategy:
    """JSON values that are not of type `of` (a bool is not an int); falsy ones often."""

    def other(value) -> bool:
        return not isinstance(value, of) or (of is int and isinstance(value, bool))

    odd = [value for value in FALSY_AND_ODD if other(value)]
    return st.one_of(st.sampled_from(odd), json_values().filter(other))


def short_harmless_commands() -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_characters="'"), max_size=12).map(lambda t: f": '{t}'")


def mostly(plausible: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """Three parts plausible, one part hostile: requests valid but for a field or two
    are the ones that find what a server wrongly accepts."""
    return st.one_of(plausible, plausible, plausible, hostile)


def submit_bodies() -> st.SearchStrategy[dict]:
    """POST /api/jobs objects: valid ones, and valid ones with one field out of range or
    of a wrong type, or one unknown field."""
    valid = st.fixed_dictionaries(
        {"command": short_harmless_commands()},
        optional={
            "image": st.sampled_from([None, "", "alpine:latest"]),
            "timeout_seconds": st.one_of(st.none(), st.integers(0, MAX_JOB_TIMEOUT)),
            "max_attempts": st.one_of(st.none(), st.integers(0, 10)),
            "idempotency_key": st.one_of(st.none(), st.text(max_size=12)),
        },
    )
    integers = st.one_of(
        st.integers(-2, 12), st.integers(595, 605), huge_integers(), wrong_types(int)
    )
    wrong = {
        "command": st.one_of(harmless_commands(), wrong_types(str)),
        "image": st.one_of(st.just("-rm"), texts(), wrong_types(str)),
        "timeout_seconds": integers,
        "max_attempts": integers,
        "idempotency_key": st.one_of(st.text(min_size=250, max_size=300), wrong_types(str)),
    }
    one_wrong = st.tuples(valid, st.sampled_from(sorted(wrong))).flatmap(
        lambda p: wrong[p[1]].map(lambda value: {**p[0], p[1]: value})
    )
    unknown = st.tuples(valid, json_keys(), json_values()).map(lambda p: {**p[0], p[1]: p[2]})
    return st.one_of(valid, one_wrong, one_wrong, unknown)


def bodies(submits: bool) -> st.SearchStrategy[bytes | None]:
    """Request bodies: none, JSON of any shape, submit-shaped (mostly, with `submits`),
    not JSON, not UTF-8, very deeply nested, around and over the 64 KiB limit."""
    as_json = st.one_of(json_values(), submit_bodies()).map(lambda v: json.dumps(v).encode())
    nested = st.sampled_from([2, 999, 1000, 5000, 30_000]).map(lambda n: b"[" * n + b"]" * n)
    large = st.integers(MAX_BODY_BYTES - 40, MAX_BODY_BYTES * 3).map(
        lambda n: b'{"x": "' + b"y" * n + b'"}'
    )
    not_utf8 = invalid_utf8().map(lambda b: b'{"image": "' + b + b'"}')
    odd = st.one_of(as_json, nested, large, not_utf8, st.binary(max_size=64))
    if submits:
        submit = submit_bodies().map(lambda v: json.dumps(v).encode())
        return st.one_of(submit, submit, submit, odd, st.none())
    return st.one_of(st.none(), st.none(), odd)


def encoded(value: bytes | str) -> str:
    """Percent-encoded, every byte but unreserved ones (invalid UTF-8 travels this way)."""
    return quote_from_bytes(value.encode() if isinstance(value, str) else value, safe="")


NUMERIC_PARAMETERS = {
    "start_index",
    "limit",
    "worker",
    "created_after_ms",
    "created_before_ms",
    "follow",
    "attempt",
    "stdout_offset",
    "stderr_offset",
}
STATUS_LABELS = [b"pending", b"running", b"completed", b"failed", b"cancelled", b"FAILED", b"x"]


def parameter_values(name: str) -> st.SearchStrategy[bytes]:
    """Mostly what the parameter takes (integers of any size for a numeric one, a
    status label for `status`), else anything, invalid UTF-8 included."""
    anything = st.one_of(integer_texts(), texts().map(str.encode), invalid_utf8())
    if name in NUMERIC_PARAMETERS:
        return mostly(integer_texts(), anything)
    if name == "status":
        return mostly(st.sampled_from(STATUS_LABELS), anything)
    return anything


@functools.cache
def query_strings(route: str) -> st.SearchStrategy[str]:
    """Mostly the route's own parameters, sometimes unknown ones."""
    own = QUERY_PARAMETERS.get(route, [])
    unknown = st.tuples(st.one_of(texts().map(str.encode), invalid_utf8()), parameter_values(""))
    if own:
        known = st.sampled_from(own).flatmap(
            lambda name: parameter_values(name).map(lambda value: (name.encode(), value))
        )
        unknown = mostly(known, unknown)
    pair = unknown.map(lambda p: f"{encoded(p[0])}={encoded(p[1])}")
    query = st.lists(pair, max_size=4).map(lambda pairs: "?" + "&".join(pairs) if pairs else "")
    return query.filter(lambda q: len(q) <= MAX_QUERY_CHARS)


def job_ids(known: list[str]) -> st.SearchStrategy[str]:
    """Job ids: of existing jobs (in every UUID spelling), random UUIDs, junk. `known`
    grows as jobs are made: a job is drawn by number, so draws stay consistent."""
    existing = st.integers(0, 2**16).map(lambda n: known[n % len(known)] if known else NO_JOB)
    spellings = st.sampled_from(
        [str, str.upper, lambda i: i.replace("-", ""), lambda i: "{" + i + "}", "urn:uuid:".__add__]
    )
    return st.one_of(
        st.tuples(existing, spellings).map(lambda p: p[1](p[0])),
        st.uuids().map(str),
        texts(),
        st.just(NO_JOB),
    )


# ---------------------------------------------------------------------- REST calls


@dataclass
class RestCall:
    method: str
    path: str
    body: bytes | None
    content_type: str | None


@dataclass(frozen=True)
class Target:
    """One thing to fuzz: a name (it seeds the run), what to send, and how many times
    the default number of examples it gets (submits have the most to find; HEAD runs
    GET's code)."""

    name: str
    requests: st.SearchStrategy
    weight: float = 1

    @property
    def examples(self) -> int:
        return max(1, round(EXAMPLES * self.weight))


def normalized(path: str) -> str:
    """The route a path may reach once the server decodes it."""
    return re.sub("/+", "/", unquote(path.split("?")[0])).rstrip("/")


def route_methods() -> dict[str, set]:
    """{route: its methods}, read from the Klein app (so a new route is fuzzed too)."""
    from jobsched.api.rest import RestApi  # imports klein: only here, when fuzzing

    methods: dict[str, set] = {}
    for rule in RestApi.app.url_map.iter_rules():
        methods.setdefault(rule.rule, set()).update(rule.methods)
    return methods


def filled_paths(route: str, known: list[str]) -> st.SearchStrategy[str]:
    """The route with its variables filled in (job ids, junk, invalid UTF-8, a slash)."""
    parts = re.split(r"<[^>]+>", route)
    if len(parts) == 1:
        return st.just(route)
    segment = st.one_of(job_ids(known).map(encoded), invalid_utf8().map(encoded), st.just("%2F"))
    values = st.lists(segment, min_size=len(parts) - 1, max_size=len(parts) - 1)
    return values.map(
        lambda vs: parts[0] + "".join(v + p for v, p in zip(vs, parts[1:], strict=True))
    )


def rest_calls(
    paths: st.SearchStrategy[str], methods: st.SearchStrategy[str], route: str, submits: bool
) -> st.SearchStrategy[RestCall]:
    return st.builds(
        RestCall,
        method=methods,
        path=st.tuples(paths, query_strings(route)).map("".join),
        body=bodies(submits),
        content_type=st.sampled_from(CONTENT_TYPES),
    )


def rest_targets(known: list[str]) -> list[Target]:
    """Every route with each of its methods (a POST to TransferLeadership or DrainNode
    excepted: EffectfulCallFuzzTests fuzzes those), every route with methods it lacks,
    and paths no route has."""
    methods = route_methods()
    targets = []
    for route, own in sorted(methods.items()):
        for method in sorted(own - ({"POST"} if route in EFFECTFUL_ROUTES else set())):
            calls = rest_calls(filled_paths(route, known), st.just(method), route, method == "POST")
            weight = 1 + (route in QUERY_PARAMETERS)
            if (method, route) == ("POST", "/api/jobs"):
                weight = SUBMIT_WEIGHT
            elif method == "HEAD":
                weight /= 4
            targets.append(Target(f"{method} {route}", calls, weight))

    @st.composite
    def wrong_method(draw) -> RestCall:
        route = draw(st.sampled_from(sorted(methods)))
        method = st.sampled_from([m for m in METHODS if m not in methods[route]])
        return draw(rest_calls(filled_paths(route, known), method, route, submits=False))

    unknown_paths = st.one_of(
        st.lists(st.one_of(texts().map(encoded), invalid_utf8().map(encoded)), max_size=4).map(
            lambda segments: "/" + "/".join(segments)
        ),
        st.sampled_from(["//", "/api//jobs", "/api/jobs/", "/api/./jobs", "/%2e%2e/", "/api"]),
        st.sampled_from(sorted(methods))
        .flatmap(lambda r: filled_paths(r, known))
        .map(lambda path: path + "/x"),
    )
    no_route = rest_calls(unknown_paths, st.sampled_from(METHODS), "", submits=True).filter(
        lambda call: not (call.method == "POST" and normalized(call.path) in EFFECTFUL_ROUTES)
    )
    return [
        *targets,
        Target("a method the route lacks", wrong_method()),
        Target("no route", no_route),
    ]


# ---------------------------------------------------------------------- gRPC requests

_INTEGER_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def plausible_values(fd: FieldDescriptor, known: list[str], depth: int) -> st.SearchStrategy:
    """Values a well-behaved client sends: small numbers, the enum's values, short
    text, existing job ids, a harmless short command."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(fd.message_type, known, depth + 1)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([value.number for value in fd.enum_type.values])
    if fd.type == FieldDescriptor.TYPE_STRING:
        special = {
            "command": short_harmless_commands(),
            "job_id": job_ids(known),
            "image": st.sampled_from(["", "alpine:latest"]),
        }
        return special.get(fd.name, st.text(max_size=8))
    return _scalars(fd, st.integers(0, 12))


def hostile_values(fd: FieldDescriptor, known: list[str], depth: int) -> st.SearchStrategy:
    """Anything the field's type can hold: the edges and all of its range, unknown enum
    values, any text (a `command` stays harmless, however long)."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(fd.message_type, known, depth + 1)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return harmless_commands() if fd.name == "command" else texts()
    low, high = _INTEGER_RANGES.get(fd.type, (0, 1))
    edges = [n for n in BOUNDARIES if low <= n <= high]
    return _scalars(fd, st.one_of(st.sampled_from(edges), st.integers(low, high)))


def _scalars(fd: FieldDescriptor, integers: st.SearchStrategy) -> st.SearchStrategy:
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if fd.type == FieldDescriptor.TYPE_FLOAT else 64)
    return integers


def messages(descriptor, known: list[str], depth: int = 0) -> st.SearchStrategy:
    """Instances of the message `descriptor` describes: plausible ones, plausible ones
    with one field hostile (they find what a server wrongly accepts), and any mix."""
    cls = GetMessageClass(descriptor)
    fields = [
        fd
        for fd in descriptor.fields
        if fd.type != FieldDescriptor.TYPE_MESSAGE or depth < 2  # bounded nesting
    ]
    if not fields:
        return st.just(cls())

    def values(pick, fd: FieldDescriptor) -> st.SearchStrategy:
        value = pick(fd, known, depth)
        return st.lists(value, max_size=3) if fd.is_repeated else value

    plausible = {fd.name: values(plausible_values, fd) for fd in fields}
    hostile = {fd.name: values(hostile_values, fd) for fd in fields}
    base = st.fixed_dictionaries({}, optional=plausible)
    one_hostile = st.tuples(base, st.sampled_from(sorted(hostile))).flatmap(
        lambda p: hostile[p[1]].map(lambda value: {**p[0], p[1]: value})
    )
    mixed = st.fixed_dictionaries(
        {}, optional={name: st.one_of(plausible[name], hostile[name]) for name in plausible}
    )
    return st.one_of(base, one_hostile, one_hostile, mixed).map(lambda kw: cls(**kw))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field on the wire (a string, bytes or message field)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def raw_requests(method, known: list[str]) -> st.SearchStrategy[bytes]:
    """A serialized request: a generated message, then (sometimes) invalid UTF-8 as a
    string field's last value, an unknown field, or bytes that are no message at all."""
    descriptor = method.input_type
    strings = [fd.number for fd in descriptor.fields if fd.type == FieldDescriptor.TYPE_STRING]
    tails = mostly(
        st.just(b""),
        st.one_of(
            st.tuples(st.sampled_from(strings or [1]), invalid_utf8()).map(
                lambda p: length_delimited(*p)
            ),
            st.tuples(st.integers(100, 2**29 - 1), st.binary(max_size=8)).map(
                lambda p: length_delimited(*p)
            ),
            st.binary(min_size=1, max_size=16),
        ),
    )
    return st.tuples(messages(descriptor, known), tails).map(
        lambda p: p[0].SerializeToString() + p[1]
    )


def grpc_targets(known: list[str], names: list[str] | None = None) -> list[Target]:
    """One target per SchedulerService method (read from the descriptor), but
    TransferLeadership and DrainNode (EffectfulCallFuzzTests fuzzes those)."""
    names = names or [m.name for m in SERVICE.methods if m.name not in EFFECTFUL_METHODS]
    return [
        Target(
            name,
            raw_requests(SERVICE.methods_by_name[name], known),
            SUBMIT_WEIGHT if name == "SubmitJob" else 1,
        )
        for name in names
    ]


def decodes_to_harmful_command(method_name: str, data: bytes) -> bool:
    """Whether the server would decode a command `harmless_commands` did not make."""
    try:
        message = GetMessageClass(SERVICE.methods_by_name[method_name].input_type).FromString(data)
    except DecodeError:
        return False
    return _has_harmful_command(message)


def _has_harmful_command(message) -> bool:
    for fd, value in message.ListFields():
        for item in value if fd.is_repeated else [value]:
            if fd.name == "command" and isinstance(item, str) and not HARMLESS.fullmatch(item):
                return True
            if fd.type == FieldDescriptor.TYPE_MESSAGE and _has_harmful_command(item):
                return True
    return False


# ---------------------------------------------------------------------- blocking clients


@dataclass
class RestAnswer:
    status: int
    content_type: str
    body: bytes

    def json(self):
        return decoded_json(self.body)


def send_rest(port: int, call: RestCall) -> RestAnswer:
    """One request on a connection of its own; an event stream's body is not read."""
    if carries_harmful_command(decoded_json(call.body)):
        raise AssertionError(f"refusing to send a command that is not harmless: {call}")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.putrequest(call.method, call.path, skip_accept_encoding=True)
        if call.content_type is not None:
            conn.putheader("Content-Type", call.content_type)
        if call.body is not None:
            conn.putheader("Content-Length", str(len(call.body)))
        conn.endheaders(call.body)
        response = conn.getresponse()
        content_type = response.getheader("Content-Type", "")
        streaming = content_type.startswith("text/event-stream")
        body = b"" if streaming or call.method == "HEAD" else response.read()
        return RestAnswer(response.status, content_type, body)
    finally:
        conn.close()


def get_json(port: int, path: str):
    answer = send_rest(port, RestCall("GET", path, None, None))
    assert answer.status == 200, (path, answer)
    return answer.json()


@dataclass
class GrpcAnswer:
    code: grpc.StatusCode
    details: str
    error_code: str | None
    response: object = None


def call_grpc(channel: grpc.Channel, method_name: str, data: bytes) -> GrpcAnswer:
    """Call a SchedulerService method with already serialized `data`."""
    if decodes_to_harmful_command(method_name, data):
        raise AssertionError(f"refusing to send a command that is not harmless: {data!r}")
    method = SERVICE.methods_by_name[method_name]
    path = f"/{SERVICE.full_name}/{method.name}"
    decode = GetMessageClass(method.output_type).FromString
    try:
        if method.server_streaming:
            response = list(channel.unary_stream(path, None, decode)(data, timeout=REQUEST_TIMEOUT))
        else:
            response = channel.unary_unary(path, None, decode)(data, timeout=REQUEST_TIMEOUT)
    except grpc.RpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        return GrpcAnswer(error.code(), error.details(), trailers.get("jobsched-error-code"))
    return GrpcAnswer(grpc.StatusCode.OK, "", None, response)


# ---------------------------------------------------------------------- checks


def check_rest_answer(call: RestCall, answer: RestAnswer) -> None:
    """No server error, no HTML but the dashboard, no redirect, every error JSON with
    `error` and a known `code` (503/504 only as a typed availability answer)."""
    where = f"{call} answered {answer.status} {answer.content_type} {answer.body[:300]!r}"
    dashboard = normalized(call.path) == "" and call.method in ("GET", "HEAD")
    if answer.content_type.startswith("text/html"):
        assert dashboard and answer.status == 200, f"HTML: {where}"
    if answer.status < 400:
        assert answer.status < 300, f"redirect: {where}"
        return
    assert answer.content_type == "application/json", f"error not JSON: {where}"
    if call.method == "HEAD":
        return
    body = answer.json()
    if normalized(call.path) == "/health/ready" and answer.status == 503:
        assert body == {"status": "no_leader", "leader_id": None}, where
        return
    assert isinstance(body, dict), f"error body not a JSON object: {where}"
    assert isinstance(body.get("error"), str) and body["error"], f"no error: {where}"
    assert body.get("code") in REST_CODES, f"no known code: {where}"
    if answer.status >= 500:
        assert answer.status in (503, 504) and body["code"] in AVAILABILITY_CODES, where


def check_grpc_answer(method_name: str, data: bytes, answer: GrpcAnswer) -> None:
    """No INTERNAL or UNKNOWN; every error carries its code (UNAVAILABLE and
    DEADLINE_EXCEEDED only as typed availability answers)."""
    where = f"{method_name}({data[:300]!r}) answered {answer.code.name} {answer.details!r}"
    assert answer.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), where
    if answer.code == grpc.StatusCode.OK:
        return
    assert answer.error_code in CODES, f"no jobsched-error-code: {where}"
    if answer.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        assert answer.error_code in AVAILABILITY_CODES | {"DRAINING"}, where


def valid_submission(
    command, image=None, timeout_seconds=0, idempotency_key="", max_attempts=0
) -> bool:
    """Whether API.md (§2.1, §4) allows this job: the oracle for accepted submits (a
    server that takes one this refuses has taken bad input). An image is only checked
    for what every valid reference obeys."""
    return (
        isinstance(command, str)
        and bool(command.strip())
        and len(command.encode()) <= 1024
        and "\0" not in command
        and (image is None or (isinstance(image, str) and not image.startswith("-")))
        and (image is None or len(image.encode()) <= 255)
        and _integer_in(timeout_seconds, 0, MAX_JOB_TIMEOUT)
        and _integer_in(max_attempts, 0, 10)
        and isinstance(idempotency_key, str)
        and len(idempotency_key.encode()) <= 256
    )


def _integer_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def valid_rest_submission(body: bytes | None) -> bool:
    """POST /api/jobs: a JSON object of the documented fields (null = absent)."""
    fields = decoded_json(body)
    if not isinstance(fields, dict) or not set(fields) <= {"command", *SUBMIT_FIELDS}:
        return False
    defaults = {"command": None, "timeout_seconds": 0, "idempotency_key": "", "max_attempts": 0}
    present = {name: value for name, value in fields.items() if value is not None}
    return valid_submission(**{**defaults, **present})


def valid_grpc_submission(data: bytes) -> bool:
    try:
        request = pb.SubmitJobRequest.FromString(data)
    except DecodeError:
        return False
    return valid_submission(
        request.command,
        request.image if request.HasField("image") else None,
        request.timeout_seconds,
        request.idempotency_key,
        request.max_attempts,
    )


@dataclass
class JobLedger:
    """The jobs as one node shows them; every job a request was acknowledged for; the
    command of every submit whose outcome is unknown (a commit timeout or a lost
    leadership leaves the entry in the log: it may commit later)."""

    port: int
    acked: set = field(default_factory=set)
    uncertain: set = field(default_factory=set)
    jobs: dict = field(default_factory=dict)
    known: list = field(default_factory=list)  # the ids, sorted; updated in place
    recent: deque = field(default_factory=lambda: deque(maxlen=5))  # for failure reports

    def sent(self, request, outcome) -> None:
        self.recent.append(f"{str(request)[:300]} -> {str(outcome)[:200]}")

    def read(self) -> dict:
        return {job["id"]: job for job in get_json(self.port, "/api/jobs")}

    def refresh(self) -> None:
        self._keep(self.read())

    def acknowledged(self, job_id: str | None) -> None:
        """A request was answered with success (and made `job_id`, if any)."""
        if job_id:
            self.acked.add(job_id)
        self.refresh()

    def maybe_submitted(self, command) -> None:
        self.uncertain.add(command)

    def _keep(self, jobs: dict) -> None:
        self.jobs = jobs
        self.known[:] = sorted(jobs)

    def assert_unchanged(self, what: str) -> None:
        """No job appeared (but ones acknowledged or maybe submitted earlier, which
        this node may apply late), none vanished, no finished one changed."""
        jobs = self.read()
        vanished = set(self.jobs) - set(jobs)
        assert not vanished, f"jobs vanished after {what}: {vanished}"
        appeared = {
            job_id: job["command"]
            for job_id, job in jobs.items()
            if job_id not in self.jobs
            and job_id not in self.acked
            and job["command"] not in self.uncertain
        }
        assert not appeared, f"jobs appeared after {what}: {appeared}; {self._recent()}"
        changed = {
            job_id: (job, jobs[job_id])
            for job_id, job in self.jobs.items()
            if job["status"] in FINISHED and jobs[job_id] != job
        }
        assert not changed, f"finished jobs changed after {what}: {changed}"
        self._keep(jobs)

    def _recent(self) -> str:
        return "the last requests: " + "; ".join(self.recent)
