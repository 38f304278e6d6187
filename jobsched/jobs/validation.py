"""Checks on what a client submits (API.md §2.1), shared by gRPC, REST and the CLI.

The validators raise the typed errors of jobsched.errors with the spec's messages;
the `is_*` / `parse_*` helpers answer without raising.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from jobsched.config import MAX_ATTEMPTS_LIMIT
from jobsched.errors import InvalidArgument, PermissionDenied
from jobsched.images import image_allowed, is_valid_image_reference

MAX_COMMAND_BYTES = 1024

_HEX32 = r"[0-9a-f]{32}"
_HYPHENATED = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_BRACED = rf"\{{(?P<braced>{_HYPHENATED}|{_HEX32})\}}"
_UUID_FORMS = re.compile(
    rf"(?:urn:uuid:)?(?P<plain>{_HYPHENATED})|(?P<hex>{_HEX32})|{_BRACED}",
    re.ASCII | re.IGNORECASE,
)


def validate_command(command: str) -> str:
    """Return `command` unchanged (it is stored untrimmed) if a job may run it."""
    if not command.strip():
        raise InvalidArgument("Command cannot be empty")
    try:
        size = len(command.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument("Command is not valid UTF-8") from None
    if size > MAX_COMMAND_BYTES:
        raise InvalidArgument("Command exceeds maximum allowed length")
    if "\0" in command:
        raise InvalidArgument("Command cannot contain a NUL character")
    return command


def validate_image(image: str, allowed_images: Sequence[str] = ()) -> str:
    """Return `image` if a job may use it; empty means the server default and passes."""
    if not image:
        return image
    if not is_valid_image_reference(image):
        raise InvalidArgument("Invalid image reference")
    if not image_allowed(image, allowed_images):
        raise PermissionDenied()
    return image


def validate_timeout(timeout_seconds: int, max_timeout_seconds: int) -> int:
    """Return `timeout_seconds` (0 means the server default) if within the maximum."""
    if timeout_seconds < 0:
        raise InvalidArgument("timeout_seconds cannot be negative")
    if timeout_seconds > max_timeout_seconds:
        raise InvalidArgument(f"timeout_seconds exceeds maximum of {max_timeout_seconds}")
    return timeout_seconds


def parse_uuid(text: str) -> str | None:
    """Canonical lower-case hyphenated form of a UUID in any standard spelling
    (hyphenated, 32 hex digits, braced, `urn:uuid:`), or None."""
    match = _UUID_FORMS.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    return str(uuid.UUID(match["plain"] or match["hex"] or match["braced"]))


def require_uuid(text: str, message: str) -> str:
    """parse_uuid, raising InvalidArgument(message) (the per-endpoint text of API.md)."""
    job_id = parse_uuid(text)
    if job_id is None:
        raise InvalidArgument(message)
    return job_id


MAX_IDEMPOTENCY_KEY_BYTES = 256


def validate_idempotency_key(key: str) -> str:
    """An idempotency key is optional, at most 256 UTF-8 bytes."""
    if len(key.encode("utf-8")) > MAX_IDEMPOTENCY_KEY_BYTES:
        raise InvalidArgument(
            f"idempotency_key exceeds maximum length of {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        )
    return key


def validate_max_attempts(max_attempts: int) -> int:
    """Attempts a job may make when workers are lost: 0 = the server default, else 1-10."""
    if not 0 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise InvalidArgument(f"max_attempts must be from 1 to {MAX_ATTEMPTS_LIMIT}")
    return max_attempts
