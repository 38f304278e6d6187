"""Prometheus's `promtool`, which checks the /metrics text (tests/unit/test_metrics.py).

Debian's `prometheus` package ships it (a 19 MB download); `python tests/promtool.py
install` installs it when missing, and `make test` does. Without it the check is
skipped with the reason, except in CI (`CI=true`), where it must run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import unittest

from tests.host_packages import apt_install, running_in_ci

PACKAGE = "prometheus"


def require_promtool() -> str:
    """The path of promtool; skips the test without it (fails in CI)."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    reason = "promtool is missing (run `python tests/promtool.py install` as root)"
    if running_in_ci():
        raise AssertionError(f"the metrics check must run in CI: {reason}")
    raise unittest.SkipTest(reason)


def check_metrics(text: bytes) -> tuple[int, str]:
    """`promtool check metrics` on `text`: (exit status, what it printed)."""
    done = subprocess.run(
        [require_promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=60,
    )
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def install() -> int:
    """apt-get install prometheus (for promtool) when promtool is missing."""
    if shutil.which("promtool"):
        print("promtool is already installed")
        return 0
    return apt_install(PACKAGE, recommends=False)


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(f"usage: {sys.argv[0]} install")
    sys.exit(install())
