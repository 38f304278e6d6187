"""Table-driven tests that both runners count case by case."""

from __future__ import annotations

from collections.abc import Callable, Mapping


def add_cases(cls: type, prefix: str, cases: Mapping, check: Callable) -> None:
    """Give `cls` one test method `<prefix>_<case name>` per case, each returning
    `check(self, case)` (a coroutine when `check` is async: trial waits on it)."""
    for name, case in cases.items():

        def test(self, case=case):
            return check(self, case)

        test.__name__ = f"{prefix}_{name}"
        test.__doc__ = f"{check.__doc__ or prefix} (case: {name.replace('_', ' ')})"
        setattr(cls, test.__name__, test)
