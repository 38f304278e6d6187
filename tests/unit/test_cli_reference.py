"""docs/cli.md is generated from the command's parser and cannot drift from it."""

from pathlib import Path

from twisted.trial import unittest

from jobsched.cli.main import run_server
from jobsched.cli.parser import build_parser
from jobsched.cli.reference import reference

REPO_ROOT = Path(__file__).resolve().parents[2]


class ReferenceTests(unittest.TestCase):
    def test_docs_cli_md_is_generated_from_the_parser(self):
        generated = reference(build_parser(run_server))
        committed = (REPO_ROOT / "docs" / "cli.md").read_text()
        self.assertEqual(
            committed,
            generated,
            "docs/cli.md is stale: python -m jobsched.cli.reference > docs/cli.md",
        )

    def test_every_command_and_option_is_in_the_reference(self):
        text = reference(build_parser(run_server))
        for words in (
            "jobsched job submit [options] COMMAND",
            "jobsched job wait [options] ID",
            "jobsched cluster transfer-leader [options]",
            "jobsched log list [options]",
            "`--max-wait S`",
            "`-a, --addr URL`",
            "| 124 |",
        ):
            self.assertIn(words, text)
