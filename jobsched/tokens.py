"""Bearer tokens with roles (`--auth-token-file`, BEHAVIOUR §7).

The file holds lines `ROLE TOKEN`; `#` starts a comment. Roles, each allowing what the
one before allows: `read` (every view), `submit` (also submit and cancel), `admin`
(also transfer leadership and drain). Tokens are compared in constant time, and no
message here ever holds a token (nor any word of a line, which might be one).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Iterable

from jobsched import errors

MIN_TOKEN_LENGTH = 16
_TOKEN = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: a token travels in an HTTP header and gRPC metadata."""
BEARER = "Bearer "


class Role(enum.IntEnum):
    """What a token may do; a higher role may do everything a lower one may."""

    READ = 1
    SUBMIT = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


_ROLES = {role.label: role for role in Role}


class TokenFileError(ValueError):
    """A token file that cannot be used; the message names the line, never its text."""


def parse_tokens(text: str) -> list[tuple[Role, str]]:
    """The (role, token) pairs of a token file's text, or TokenFileError."""
    pairs: list[tuple[Role, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"line {number}"
        if len(words) != 2:
            raise TokenFileError(f"{where}: expected `ROLE TOKEN` (got {len(words)} words)")
        role_word, token = words
        role = _ROLES.get(role_word)
        if role is None:
            raise TokenFileError(f"{where}: the role must be admin, submit or read")
        if len(token) < MIN_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
            raise TokenFileError(
                f"{where}: a token is at least {MIN_TOKEN_LENGTH} printable ASCII "
                "characters without spaces"
            )
        if token in seen:
            raise TokenFileError(f"{where}: repeats the token of an earlier line")
        seen.add(token)
        pairs.append((role, token))
    return pairs


def read_tokens(path: str) -> list[tuple[Role, str]]:
    """parse_tokens of the file at `path`; TokenFileError when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise TokenFileError(f"cannot read {path}: {reason}") from None
    return parse_tokens(text)


class TokenStore:
    """The tokens in force. `replace` swaps them at once (a reload), so threads that
    check tokens meanwhile see either the old set or the new one."""

    def __init__(self, pairs: Iterable[tuple[Role, str]] = ()) -> None:
        self._pairs: tuple[tuple[Role, bytes], ...] = ()
        self.replace(pairs)

    def replace(self, pairs: Iterable[tuple[Role, str]]) -> None:
        self._pairs = tuple((role, _digest(token)) for role, token in pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def summary(self) -> str:
        """`3 tokens (admin 1, submit 1, read 1)`: counts only."""
        counts = Counter(role for role, _token in self._pairs)
        by_role = ", ".join(f"{role.label} {counts[role]}" for role in reversed(Role))
        return f"{len(self._pairs)} tokens ({by_role})"

    def role_of(self, token: str) -> Role | None:
        """The role of `token`, or None. Its digest is compared with every token's in
        force, each in constant time (digests are of one length, so not even a token's
        length shows), whatever matches."""
        offered = _digest(token)
        found = None
        for role, known in self._pairs:
            if hmac.compare_digest(offered, known) and found is None:
                found = role
        return found

    def authorize(self, authorization: str | None, needed: Role) -> Role:
        """The role of an `Authorization` value (`Bearer <token>`) if it may do what
        needs `needed`; Unauthenticated without a known token, PermissionDenied for a
        role below `needed`."""
        if not authorization:
            raise errors.Unauthenticated("Authentication required: send a bearer token")
        if not authorization.startswith(BEARER):
            raise errors.Unauthenticated("Authentication required: expected `Bearer <token>`")
        role = self.role_of(authorization[len(BEARER) :].strip())
        if role is None:
            raise errors.Unauthenticated("Invalid token")
        if role < needed:
            raise errors.PermissionDenied(
                f"Permission denied: a {role.label} token may not do this (needs {needed.label})"
            )
        return role


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()
