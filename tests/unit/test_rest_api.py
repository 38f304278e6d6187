"""The REST adapter's answers to what no route expects, and its request parsing, on
input the fuzz test (integration/test_fuzz_api.py) found mishandled: every answer is
JSON with `error` and `code`."""

from __future__ import annotations

import io
import json

from twisted.trial import unittest

from jobsched import errors
from jobsched.api import rest_requests as parse


class FakeRequest:
    """What rest_requests reads of a twisted.web request: the body and the arguments."""

    def __init__(self, body: bytes = b"", args: dict | None = None) -> None:
        self.content = io.BytesIO(body)
        self.args = args or {}


class BrokenApi:
    """An IClusterAPI whose readiness check has a bug."""

    def is_ready(self):
        raise RuntimeError("a bug")


class UnexpectedRequestTests(unittest.TestCase):
    """Answers in-memory (treq's StubTreq) from a RestApi over a broken API."""

    def get(self, path: str) -> tuple[int, bytes, dict]:
        from treq.testing import StubTreq  # (klein, below, installs a reactor: only here)

        from jobsched.api.rest import RestApi

        stub = StubTreq(RestApi(BrokenApi(), router=None).resource())
        answer = self.successResultOf(_flushed(stub, stub.get(f"http://node{path}")))
        body = self.successResultOf(_flushed(stub, answer.content()))
        return answer.code, body, answer.headers.getRawHeaders("content-type")

    def test_an_error_no_route_expected_is_json_500_and_logged(self):
        status, body, content_type = self.get("/health/ready")
        self.assertEqual((status, content_type), (500, ["application/json"]))
        self.assertEqual(json.loads(body), {"error": "Internal error", "code": "INTERNAL"})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_path_that_is_not_utf8_gets_json_400(self):
        status, body, content_type = self.get("/api/jobs/%FF")
        self.assertEqual((status, content_type), (400, ["application/json"]))
        self.assertEqual(
            json.loads(body), {"error": "URL is not valid UTF-8", "code": "INVALID_ARGUMENT"}
        )

    def test_doubled_slashes_find_no_route_rather_than_a_redirect(self):
        status, body, _ = self.get("/api//jobs")
        self.assertEqual((status, json.loads(body)["code"]), (404, "NOT_FOUND"))


def _flushed(stub, d):
    stub.flush()
    return d


class RequestParsingTests(unittest.TestCase):
    def refusal(self, parse_function, *args) -> str:
        with self.assertRaises(errors.InvalidArgument) as caught:
            parse_function(*args)
        return caught.exception.message

    def test_a_body_nested_too_deep_for_the_parser_is_not_valid_json(self):
        body = b"[" * 30_000 + b"]" * 30_000  # within the 64 KiB limit
        self.assertEqual(
            self.refusal(parse.read_json, FakeRequest(body)), "request body is not valid JSON"
        )

    def test_an_integer_of_more_digits_than_python_converts_is_refused(self):
        request = FakeRequest(args={b"limit": [b"9" * 4301]})
        self.assertEqual(
            self.refusal(parse.int_arg, request, "limit", 0, 100),
            "limit must be at most 100",
        )
        leading_zeros = FakeRequest(args={b"limit": [b"0" * 5000 + b"7"]})
        self.assertEqual(parse.int_arg(leading_zeros, "limit", 0, 100), 7)

    def test_an_idempotency_key_of_another_type_is_refused_even_when_falsy(self):
        for key in (False, 0, [], {}):
            self.assertEqual(
                self.refusal(parse.submit_request, {"command": "true", "idempotency_key": key}),
                "idempotency_key must be a string",
            )
        absent = parse.submit_request({"command": "true", "idempotency_key": None})
        self.assertEqual(absent.idempotency_key, "")

    def test_a_transfer_body_takes_only_a_target_node_id(self):
        self.assertEqual(
            self.refusal(parse.transfer_target, {"target": 2}), "unknown field: target"
        )
        for target in (False, "", [], -1, 2**63):
            self.assertEqual(
                self.refusal(parse.transfer_target, {"target_node_id": target}),
                "target_node_id must be a non-negative integer",
            )
        self.assertEqual(
            self.refusal(parse.transfer_target, None), "request body must be a JSON object"
        )
        self.assertEqual(parse.read_json(FakeRequest(b" "), empty={}), {})
        self.assertEqual(parse.transfer_target({"target_node_id": None}), 0)
        self.assertEqual(parse.transfer_target({}), 0)
        self.assertEqual(parse.transfer_target({"target_node_id": 3}), 3)
