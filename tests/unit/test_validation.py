"""Input validation of API.md §2.1: commands, images, allow-list, timeouts, job ids."""

from __future__ import annotations

import uuid

import pytest

from jobsched.api.errors import InvalidArgument, PermissionDenied
from jobsched.jobs.validation import (
    image_allowed,
    is_valid_image_reference,
    parse_uuid,
    require_uuid,
    validate_command,
    validate_image,
    validate_timeout,
)

DIGEST = "sha256:" + "a" * 64


def test_command_is_returned_untrimmed() -> None:
    assert validate_command("  echo hi \n") == "  echo hi \n"


@pytest.mark.parametrize("command", ["", " ", "\t\n  "])
def test_blank_command_is_refused(command: str) -> None:
    with pytest.raises(InvalidArgument, match="^Command cannot be empty$"):
        validate_command(command)


def test_command_length_is_counted_in_utf8_bytes() -> None:
    assert validate_command("x" * 1024)
    assert validate_command("é" * 512)  # 2 bytes each: exactly 1024
    for command in ("x" * 1025, "é" * 512 + "x", "€" * 342):  # 1025, 1025, 1026 bytes
        with pytest.raises(InvalidArgument, match="^Command exceeds maximum allowed length$"):
            validate_command(command)


def test_command_must_be_valid_utf8_without_nul() -> None:
    with pytest.raises(InvalidArgument, match="UTF-8"):
        validate_command("echo \udcff")
    with pytest.raises(InvalidArgument, match="NUL"):
        validate_command("echo a\0b")


@pytest.mark.parametrize(
    "reference",
    [
        "alpine",
        "alpine:3.19",
        "library/alpine:latest",
        "registry.example.com:5000/team/app:v1",
        "jobsched-test/busybox:latest",
        f"alpine@{DIGEST}",
        f"alpine:3.19@{DIGEST}",
        "localhost:5000/a__b/c-d.e:Tag_1",
        "[::1]:5000/app",
        "a" * 255,
    ],
)
def test_valid_image_references(reference: str) -> None:
    assert is_valid_image_reference(reference)
    assert validate_image(reference) == reference


@pytest.mark.parametrize(
    "reference",
    [
        "-rm",
        "--privileged",
        "UPPER/Case",
        "Alpine",
        "a b",
        " alpine",
        "a" * 256,
        "alpine:",
        ":tag",
        "alpine@sha256:abc",
        "alpine@sha256:" + "A" * 64,
        "alpine:-tag",
        "alpine:" + "t" * 129,
        "a//b",
        "/alpine",
        "alpine/",
        "alpine-",
        "alpine\n",
    ],
)
def test_invalid_image_references(reference: str) -> None:
    assert not is_valid_image_reference(reference)
    with pytest.raises(InvalidArgument, match="^Invalid image reference$"):
        validate_image(reference)


def test_empty_image_means_server_default() -> None:
    assert validate_image("", ["busybox:*"]) == ""


def test_allow_list() -> None:
    patterns = ["alpine:*", "registry.example.com/team/*"]
    assert image_allowed("anything:1", [])
    assert image_allowed("alpine:3.19", patterns)
    assert image_allowed("alpine", patterns)  # Docker runs alpine:latest
    assert image_allowed("registry.example.com/team/app:v1", patterns)
    assert not image_allowed("busybox:latest", patterns)
    assert not image_allowed("Alpine:3.19", patterns)  # case-sensitive
    assert not image_allowed(f"alpine@{DIGEST}", ["alpine:*"])
    assert validate_image("alpine:3.19", patterns) == "alpine:3.19"
    with pytest.raises(PermissionDenied, match="^Image not allowed$"):
        validate_image("busybox", patterns)


def test_timeout() -> None:
    assert validate_timeout(0, 3600) == 0
    assert validate_timeout(3600, 3600) == 3600
    with pytest.raises(InvalidArgument, match="^timeout_seconds exceeds maximum of 3600$"):
        validate_timeout(3601, 3600)
    with pytest.raises(InvalidArgument, match="negative"):
        validate_timeout(-1, 3600)


def test_uuid_forms() -> None:
    value = uuid.uuid4()
    canonical = str(value)
    for text in (
        canonical,
        canonical.upper(),
        value.hex,
        value.hex.upper(),
        "{" + canonical + "}",
        "{" + value.hex + "}",
        "urn:uuid:" + canonical,
        "URN:UUID:" + canonical.upper(),
    ):
        assert parse_uuid(text) == canonical, text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-uuid",
        "1234",
        "g" * 32,
        "{" + "0" * 32,
        " " + "0" * 32,
        "0" * 32 + "\n",
        "0" * 31,
        "0" * 33,
        "0000-00000000-0000-0000-000000000000",
        "uuid:" + "0" * 32,
        "urn:uuid:{" + "0" * 32 + "}",
    ],
)
def test_invalid_uuids(text: str) -> None:
    assert parse_uuid(text) is None


def test_require_uuid_uses_the_endpoint_message() -> None:
    assert require_uuid("0" * 32, "Invalid job ID") == "00000000-0000-0000-0000-000000000000"
    with pytest.raises(InvalidArgument, match="^invalid job_id$"):
        require_uuid("nope", "invalid job_id")
