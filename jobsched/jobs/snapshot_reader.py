"""Reads a snapshot's JSON object a part at a time.

`json.loads` of a snapshot of 100,000 jobs holds the reactor for about a third of a
second; `read_object` is a generator that reads the object's values one per step and
the arrays it is told to stream one element per step, so that a follower installing a
leader's snapshot reads it a slice per reactor turn (`JobTable.begin_restore`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def read_object(
    text: str, streamed: frozenset[str], values: dict[str, object], elements: dict[str, list]
) -> Iterator[str]:
    """Read the JSON object `text`, yielding the member's name after each value read
    (an element of a streamed array, or another member's value): each member goes to
    `values`, except an array under a `streamed` key, whose elements go one at a time
    to a list in `elements`. ValueError where `text` is not one JSON object (what
    `json.loads` refuses), when the generator reaches it."""
    position = _skip(text, _expect(text, _skip(text, 0), "{"))
    if text.startswith("}", position):
        position += 1
    else:
        while True:
            key, position = _DECODER.raw_decode(text, position)
            if not isinstance(key, str):
                raise ValueError(f"a member name that is not a string at {position}")
            position = _skip(text, _expect(text, _skip(text, position), ":"))
            if key in streamed and text.startswith("[", position):
                items = elements[key] = []
                position = _skip(text, position + 1)
                if text.startswith("]", position):
                    position += 1
                else:
                    while True:
                        item, position = _DECODER.raw_decode(text, position)
                        items.append(item)
                        yield key
                        position, more = _after_item(text, position, "]")
                        if not more:
                            break
            else:
                values[key], position = _DECODER.raw_decode(text, position)
                yield key
            position, more = _after_item(text, position, "}")
            if not more:
                break
    if _skip(text, position) != len(text):
        raise ValueError(f"extra data at {position}")


def _after_item(text: str, position: int, closer: str) -> tuple[int, bool]:
    """Past what follows an item: the next item's position and True after a comma,
    else the position after `closer` and False."""
    position = _skip(text, position)
    if text.startswith(",", position):
        return _skip(text, position + 1), True
    return _expect(text, position, closer), False


def _skip(text: str, position: int) -> int:
    """The position of the first character at or after `position` that is not JSON
    whitespace."""
    return _SPACE.match(text, position).end()


def _expect(text: str, position: int, character: str) -> int:
    """The position after `character`, which must be at `position`."""
    if not text.startswith(character, position):
        raise ValueError(f"expected {character!r} at {position}")
    return position + 1
