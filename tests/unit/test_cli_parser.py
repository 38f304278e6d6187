"""The `jobsched` command tree: client options anywhere, defaults, usage errors, and
`server` passing its arguments through untouched."""

import argparse
import io
from contextlib import redirect_stderr, redirect_stdout
from importlib import import_module
from pathlib import Path

from twisted.trial import unittest

from jobsched.cli.connection import ClientSettings, Target, parse_address
from jobsched.cli.failures import EXIT_USAGE, CliFailure, UsageFailure
from jobsched.cli.parser import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_server(args):
    return args


def parse(*args: str) -> argparse.Namespace:
    namespace, rest = build_parser(run_server).parse_known_args(list(args))
    if namespace.command != "server":
        assert not rest, rest
    return namespace


def options(**values) -> argparse.Namespace:
    defaults = dict(addr=None, ca_cert=None, cert=None, key=None, token=None, rpc_timeout=None)
    return argparse.Namespace(**{**defaults, **values})


class ClientOptionPlacementTests(unittest.TestCase):
    def test_options_before_the_command_between_group_and_verb_and_after_the_verb(self):
        for args in (
            ("-a", "http://h:1", "-o", "json", "job", "status", "X"),
            ("job", "-a", "http://h:1", "-o", "json", "status", "X"),
            ("job", "status", "X", "-a", "http://h:1", "-o", "json"),
            ("-o", "json", "job", "status", "-a", "http://h:1", "X"),
        ):
            namespace = parse(*args)
            self.assertEqual((namespace.addr, namespace.output), ("http://h:1", "json"), args)
            self.assertEqual(namespace.job_id, "X")
            self.assertEqual(namespace.handler, "job_commands.status")

    def test_defaults_when_no_option_is_given(self):
        namespace = parse("cluster", "status")
        self.assertEqual(namespace.output, "table")
        self.assertIsNone(namespace.addr)
        self.assertIsNone(namespace.token)
        self.assertIsNone(namespace.rpc_timeout)
        self.assertEqual(namespace.handler, "cluster_commands.status")

    def test_every_command_of_the_spec_is_there(self):
        for args, handler in (
            (("job", "submit", "echo hi"), "job_commands.submit"),
            (("job", "status", "X"), "job_commands.status"),
            (("job", "cancel", "X"), "job_commands.cancel"),
            (("job", "list"), "job_commands.list_jobs"),
            (("job", "wait", "X"), "job_commands.wait"),
            (("job", "logs", "X"), "job_commands.logs"),
            (("cluster", "status"), "cluster_commands.status"),
            (("cluster", "transfer-leader"), "cluster_commands.transfer_leader"),
            (("cluster", "drain"), "cluster_commands.drain"),
            (("log", "list"), "cluster_commands.log_list"),
        ):
            self.assertEqual(parse(*args).handler, handler, args)
            module, function = handler.split(".")
            self.assertTrue(callable(getattr(import_module(f"jobsched.cli.{module}"), function)))

    def test_list_and_log_defaults(self):
        listing = parse("job", "list")
        self.assertEqual((listing.page_size, listing.all, listing.stream), (100, False, False))
        log = parse("log", "list")
        self.assertEqual((log.start_index, log.limit), (0, 100))
        self.assertEqual(parse("job", "list", "-s").stream, True)

    def test_server_takes_every_argument_after_it_untouched(self):
        namespace, rest = build_parser(run_server).parse_known_args(
            ["server", "--port", "5", "-a", "x", "-o", "json", "--help"]
        )
        self.assertEqual(namespace.command, "server")
        self.assertEqual(rest, ["--port", "5", "-a", "x", "-o", "json", "--help"])

    def usage_exit(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err), self.assertRaises(SystemExit) as raised:
            parse(*args)
        return raised.exception.code, out.getvalue(), err.getvalue()

    def test_bad_values_are_usage_errors(self):
        for args in (
            ("job", "list", "--page-size", "0"),
            ("job", "wait", "X", "--max-wait", "-1"),
            ("job", "submit", "x", "--timeout", "abc"),
            ("job", "status", "X", "-o", "yaml"),
            ("job", "status", "X", "--rpc-timeout", "0"),
            ("job", "logs", "X", "--stdout-only", "--stderr-only"),
            ("job",),
        ):
            code, _out, err = self.usage_exit(*args)
            self.assertEqual(code, EXIT_USAGE, args)
            self.assertIn("error:", err)

    def test_version_and_help_exit_0_and_help_points_at_the_docs(self):
        code, out, _err = self.usage_exit("--version")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"^jobsched \d+\.\d+")
        code, out, _err = self.usage_exit("--help")
        self.assertEqual(code, 0)
        for doc in ("getting-started.md", "cli.md", "api.md", "operations.md"):
            self.assertIn(doc, out)
            self.assertTrue((REPO_ROOT / "docs" / doc).is_file(), doc)
        self.assertIn("before or after any command", out)


class AddressTests(unittest.TestCase):
    def test_addresses(self):
        self.assertEqual(parse_address("http://127.0.0.1:50052"), Target("http", "127.0.0.1:50052"))
        self.assertEqual(parse_address("https://node-1:7000"), Target("https", "node-1:7000"))
        self.assertEqual(parse_address("10.0.0.1:9"), Target("http", "10.0.0.1:9"))
        self.assertEqual(parse_address("http://h"), Target("http", "h:50051"))
        self.assertEqual(parse_address("http://[::1]:5"), Target("http", "[::1]:5"))
        self.assertTrue(parse_address("https://h:1").tls)
        self.assertEqual(parse_address("https://h:1").at("k:2").url, "https://k:2")

    def test_bad_addresses_are_usage_errors(self):
        for text in ("ftp://h:1", "http://h:port", "http://", "http://h:1/path", "http://h:99999"):
            with self.assertRaises(UsageFailure) as raised:
                parse_address(text)
            self.assertEqual(raised.exception.exit_code, EXIT_USAGE)
            self.assertIn(text, raised.exception.message)


class SettingsTests(unittest.TestCase):
    def test_environment_gives_the_defaults_and_options_win(self):
        environ = {"JOBSCHED_ADDR": "http://10.1.1.1:7", "JOBSCHED_TOKEN": "env-token"}
        settings = ClientSettings.from_options(options(), environ)
        self.assertEqual(settings.target.url, "http://10.1.1.1:7")
        self.assertEqual(settings.token, "env-token")
        settings = ClientSettings.from_options(options(addr="h:1", token="mine"), environ)
        self.assertEqual((settings.target.url, settings.token), ("http://h:1", "mine"))
        settings = ClientSettings.from_options(options(), {})
        self.assertEqual((settings.target.url, settings.token), ("http://127.0.0.1:50051", None))

    def test_per_call_deadlines(self):
        settings = ClientSettings.from_options(options(), {})
        self.assertEqual(settings.timeout_for("GetJobStatus"), 15)
        self.assertGreater(settings.timeout_for("DrainNode"), 60)
        settings = ClientSettings.from_options(options(rpc_timeout=2.5), {})
        self.assertEqual(settings.timeout_for("DrainNode"), 2.5)

    def test_tls_files_need_https_and_cert_goes_with_key(self):
        with self.assertRaises(UsageFailure):
            ClientSettings.from_options(options(ca_cert="ca.pem"), {})
        with self.assertRaises(UsageFailure):
            ClientSettings.from_options(options(addr="https://h:1", cert="c.pem"), {})

    def test_https_reads_the_pem_files(self):
        ca = self.mktemp()
        with open(ca, "wb") as pem:
            pem.write(b"CA PEM")
        settings = ClientSettings.from_options(options(addr="https://h:1", ca_cert=ca), {})
        self.assertEqual(settings.tls.root_certificates, b"CA PEM")
        self.assertIsNone(settings.tls.private_key)
        settings = ClientSettings.from_options(options(addr="https://h:1"), {})
        self.assertIsNone(settings.tls.root_certificates)  # the system's roots
        self.assertIsNone(ClientSettings.from_options(options(), {}).tls)

    def test_an_unreadable_pem_file_is_one_error(self):
        with self.assertRaises(CliFailure) as raised:
            ClientSettings.from_options(options(addr="https://h:1", ca_cert="/no/such.pem"), {})
        self.assertIn("Cannot read --ca-cert /no/such.pem", raised.exception.message)
