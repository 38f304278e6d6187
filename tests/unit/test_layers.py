"""The floors of DESIGN.md §1 hold: the import-linter contracts in .importlinter."""

import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


class ImportContractTests(unittest.TestCase):
    def test_every_import_contract_is_kept(self):
        result = subprocess.run(
            [str(LINT_IMPORTS), "--config", str(REPO_ROOT / ".importlinter"), "--no-cache"],
            cwd=REPO_ROOT,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("0 broken", result.stdout)
