"""One suite, two runners: trial and pytest find exactly the same tests."""

import os
import re
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS = REPO_ROOT / "tests"


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def pytest_id_as_trial_name(node_id: str) -> str:
    """`unit/test_x.py::Cls::test_y` -> `tests.unit.test_x.Cls.test_y`."""
    path, name = node_id.split("::", 1)
    return "tests." + path.removesuffix(".py").replace("/", ".") + "." + name.replace("::", ".")


class RunnerAgreementTests(unittest.TestCase):
    timeout = 600

    def test_trial_and_pytest_collect_the_same_tests(self):
        collected = run([sys.executable, "-m", "pytest", "--collect-only", "-q"], TESTS)
        pytest_ids = {
            "tests." + path.removesuffix(".py").replace("/", ".") + "." + name.replace("::", ".")
            for path, name in (
                line.split("::", 1) for line in collected.splitlines() if "::" in line
            )
        }
        listed = run(
            [sys.executable, "-m", "twisted.trial", "--dry-run", "--reporter=bwverbose", "tests"],
            REPO_ROOT,
        )
        trial_ids = set(re.findall(r"^(tests\.\S+) \.\.\. ", listed, re.MULTILINE))
        self.assertGreater(len(pytest_ids), 617)
        self.assertEqual(sorted(trial_ids ^ pytest_ids), [])
