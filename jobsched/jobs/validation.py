"""Checks on what a client submits (API.md §2.1), shared by gRPC, REST and the CLI.

The validators raise the typed errors of jobsched.api.errors with the spec's messages;
the `is_*` / `parse_*` helpers answer without raising.
"""

from __future__ import annotations

import fnmatch
import re
import uuid
from collections.abc import Sequence

from jobsched.api.errors import InvalidArgument, PermissionDenied

MAX_COMMAND_BYTES = 1024
MAX_IMAGE_REFERENCE_BYTES = 255

# The reference grammar of distribution/reference (what `docker pull` accepts).
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"\w[\w.-]{0,127}"
_ALGORITHM = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
_DIGEST = rf"(?P<algorithm>{_ALGORITHM}):(?P<hex>[a-f0-9]{{32,}})"
_IMAGE_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@{_DIGEST})?", re.ASCII)

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


def is_valid_image_reference(reference: str) -> bool:
    """True for `[registry[:port]/]path[:tag][@algorithm:hex]`, at most 255 bytes."""
    if len(reference.encode("utf-8", "surrogatepass")) > MAX_IMAGE_REFERENCE_BYTES:
        return False
    match = _IMAGE_REFERENCE.fullmatch(reference)
    if match is None:
        return False
    return match["algorithm"] != "sha256" or len(match["hex"]) == 64


def image_allowed(image: str, patterns: Sequence[str]) -> bool:
    """True if no patterns are set or one glob pattern matches the image.

    An image without tag or digest is also tried as `<image>:latest`, the image Docker
    runs for it, so `alpine:*` allows `alpine`.
    """
    if not patterns:
        return True
    candidates = [image]
    match = _IMAGE_REFERENCE.fullmatch(image)
    if match is not None and match["tag"] is None and match["algorithm"] is None:
        candidates.append(f"{image}:latest")
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


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
