"""Docker image references: their grammar and the allow-list patterns of a node.

Pure functions used by the option checks (config) and by job validation.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

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
