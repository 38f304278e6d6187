"""NodeConfig: defaults, parsing of option text, and one clear error per bad option."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from jobsched.config import (
    MAX_ATTEMPTS_LIMIT,
    ConfigError,
    NodeConfig,
    PeerAddress,
    format_address,
    parse_address,
    parse_peers,
)
from jobsched.tap import Options
from tests.cases import add_cases
from tests.pki import Pki, new_tokens, write_token_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# case name -> (option, value): each value alone is refused, naming its option
BAD_VALUES = {
    "node_id_zero": ("node_id", "0"),
    "node_id_negative": ("node_id", "-1"),
    "node_id_not_a_number": ("node_id", "abc"),
    "node_id_above_int64": ("node_id", str(2**63)),
    "host_with_space": ("host", "bad host"),
    "host_empty": ("host", ""),
    "port_not_a_number": ("port", "abc"),
    "port_zero": ("port", "0"),
    "port_above_65535": ("port", "65536"),
    "port_fraction": ("port", "1.5"),
    "dashboard_port_negative": ("dashboard_port", "-1"),
    "dashboard_port_above_65535": ("dashboard_port", "70000"),
    "peer_port_negative": ("peer_port", "-1"),
    "peer_port_above_65535": ("peer_port", "70000"),
    "peer_port_a_word_other_than_off": ("peer_port", "on"),
    "advertise_peer_port_above_65535": ("advertise_peer_port", "65536"),
    "advertise_peer_port_off": ("advertise_peer_port", "off"),
    "peers_without_port": ("peers", "2:nohost"),
    "peers_with_non_numeric_id": ("peers", "x:host:1"),
    "advertise_addr_without_port": ("advertise_addr", "nohost"),
    "advertise_addr_port_zero": ("advertise_addr", "host:0"),
    "advertise_addr_unbracketed_ipv6": ("advertise_addr", "::1:7000"),
    "executor_unknown": ("executor", "foo"),
    "executor_empty": ("executor", ""),
    "image_leading_dash": ("image", "-rm"),
    "image_upper_case": ("image", "UPPER/Case"),
    "job_timeout_zero": ("job_timeout", "0"),
    "max_job_timeout_zero": ("max_job_timeout", "0"),
    "worker_slots_zero": ("worker_slots", "0"),
    "worker_slots_not_a_number": ("worker_slots", "two"),
    "max_output_bytes_zero": ("max_output_bytes", "0"),
    "tls_not_a_flag": ("tls", "maybe"),
    "election_timeout_min_zero": ("election_timeout_min", "0"),
    "heartbeat_interval_zero": ("heartbeat_interval", "0"),
    "log_format_unknown": ("log_format", "xml"),
    "worker_expiry_zero": ("worker_expiry", "0"),
    "worker_expiry_not_a_number": ("worker_expiry", "soon"),
    "worker_expiry_infinite": ("worker_expiry", "inf"),
    "stream_stall_timeout_zero": ("stream_stall_timeout", "0"),
    "stream_stall_timeout_negative": ("stream_stall_timeout", "-5"),
    "stream_stall_timeout_not_a_number": ("stream_stall_timeout", "later"),
    "max_attempts_zero": ("max_attempts", "0"),
    "max_attempts_above_ten": ("max_attempts", "11"),
    "max_attempts_not_a_number": ("max_attempts", "three"),
}

# case name -> (options, flag): values fine alone that conflict, and the option to change
CONFLICTS = {
    "job_timeout_above_max_job_timeout": ({"job_timeout": "7200"}, "--job-timeout"),
    "max_job_timeout_below_job_timeout": ({"max_job_timeout": "10"}, "--job-timeout"),
    "dashboard_port_same_as_port": ({"dashboard_port": "50051"}, "--dashboard-port"),
    "peer_port_same_as_port": ({"peer_port": "50051"}, "--peer-port"),
    "peer_port_same_as_dashboard_port": ({"peer_port": "8081"}, "--peer-port"),
    "advertise_peer_port_without_a_peer_port": (
        {"peer_port": "off", "advertise_peer_port": "7004"},
        "--advertise-peer-port",
    ),
    "election_timeout_max_not_above_min": (
        {"election_timeout_max": "150"},
        "--election-timeout-max",
    ),
    "election_timeout_min_above_max": ({"election_timeout_min": "400"}, "--election-timeout-max"),
    "heartbeat_interval_not_below_election_timeout": (
        {"heartbeat_interval": "150"},
        "--heartbeat-interval",
    ),
    "allowed_images_exclude_default_image": ({"allowed_images": "registry.local/*"}, "--image"),
}

# case name -> (--peers text, fragment of the error)
BAD_PEERS = {
    "id_only": ("2", "expected id:host:port"),
    "without_port": ("2:nohost", "expected host:port"),
    "empty_port": ("2:host:", "port must be"),
    "port_not_a_number": ("2:host:abc", "port must be"),
    "port_above_65535": ("2:host:70000", "port must be"),
    "node_id_zero": ("0:host:1", "node id"),
    "node_id_not_a_number": ("x:host:1", "node id"),
    "unbracketed_ipv6": ("2:::1:7000", "put IPv6 addresses in brackets"),
    "no_colon_after_brackets": ("2:[::1]7000", "expected [ipv6]:port"),
    "brackets_around_non_ipv6": ("2:[not-ip]:7000", "invalid IPv6 address"),
    "host_with_space": ("2:bad host:7000", "invalid host"),
    "node_id_twice": ("2:h:1,2:g:2", "node id 2 appears twice"),
}

# case name -> (argv, the one line on stderr)
TWISTD_ERRORS = {
    "bad_value": (
        ["--port", "x"],
        "jobsched: error: --port: must be an integer from 1 to 65535 (got 'x')",
    ),
    "unknown_option": (["--nope"], "jobsched: error: option --nope not recognized"),
    "stray_argument": (
        ["stray"],
        "jobsched: error: unexpected argument 'stray' (all settings are --options)",
    ),
}


def parse(**options: object) -> NodeConfig:
    """NodeConfig from option text keyed as on the command line (`node_id` = --node-id)."""
    return NodeConfig.from_options({k.replace("_", "-"): v for k, v in options.items()})


class ConfigTestCase(unittest.TestCase):
    def make_directory(self) -> Path:
        """A new, empty, absolute directory owned by this test."""
        path = Path(self.mktemp()).absolute()
        path.mkdir(parents=True)
        return path

    def assertConfigError(self, pattern: str, **options: object) -> None:
        """parse(**options) raises ConfigError whose text matches pattern."""
        with self.assertRaises(ConfigError) as caught:
            parse(**options)
        self.assertRegex(str(caught.exception), pattern)


class ParsingTests(ConfigTestCase):
    """Defaults and the parsing of good option text."""

    def test_defaults(self):
        config = parse()
        self.assertEqual(config, NodeConfig())
        self.assertEqual(config.node_id, 1)
        self.assertEqual(
            (config.host, config.port, config.dashboard_port), ("127.0.0.1", 50051, 8081)
        )
        self.assertEqual(config.peers, {})
        self.assertEqual(config.peer_port, 0)
        self.assertEqual(config.advertise_addr, "127.0.0.1:50051")
        self.assertIsNone(config.data_dir)
        self.assertEqual((config.executor, config.image), ("docker", "alpine:latest"))
        self.assertEqual(config.allowed_images, ())
        self.assertEqual((config.job_timeout, config.max_job_timeout), (30, 3600))
        self.assertEqual((config.worker_slots, config.max_output_bytes), (4, 65536))
        self.assertEqual(
            (config.tls, config.ca_cert, config.cert, config.key), (False, None, None, None)
        )
        self.assertIsNone(config.auth_token_file)
        self.assertEqual((config.election_timeout_min, config.election_timeout_max), (150, 300))
        self.assertEqual(config.heartbeat_interval, 50)
        self.assertEqual(config.log_format, "text")
        self.assertEqual((config.worker_expiry, config.max_attempts), (5.0, 3))
        self.assertEqual(config.stream_stall_timeout, 30.0)
        self.assertEqual(config.cluster_size, 1)

    def test_none_values_take_defaults(self):
        self.assertEqual(NodeConfig.from_options({"port": None, "tls": 0}), NodeConfig())

    def test_parses_every_option(self):
        tmp_path = self.make_directory()
        pki = Pki(tmp_path / "pki")
        cert, key = pki.node(2)
        files = {"ca": pki.ca_path, "cert": cert, "key": key}
        tokens = write_token_file(tmp_path / "tokens", new_tokens())
        config = parse(
            node_id="2",
            host="0.0.0.0",
            port="7001",
            dashboard_port="0",
            peer_port="7003",
            advertise_peer_port="17003",
            peers="1:10.0.0.1:7000, 3:node3.example.com:7002",
            advertise_addr="10.0.0.2:7001",
            data_dir=str(tmp_path / "data"),
            executor="process",
            image="busybox:1.36",
            allowed_images="busybox:*, registry.local/*",
            job_timeout="10",
            max_job_timeout="60",
            worker_slots="8",
            max_output_bytes="1024",
            tls=1,
            ca_cert=str(files["ca"]),
            cert=str(files["cert"]),
            key=str(files["key"]),
            auth_token_file=str(tokens),
            election_timeout_min="1000",
            election_timeout_max="2000",
            heartbeat_interval="100",
            log_format="json",
            worker_expiry="0.5",
            max_attempts="5",
            stream_stall_timeout="2.5",
        )
        self.assertEqual(config.node_id, 2)
        self.assertEqual((config.host, config.port, config.dashboard_port), ("0.0.0.0", 7001, 0))
        self.assertEqual((config.peer_port, config.advertise_peer_port), (7003, 17003))
        self.assertEqual(
            config.peers,
            {1: PeerAddress("10.0.0.1", 7000), 3: PeerAddress("node3.example.com", 7002)},
        )
        self.assertEqual(config.advertise_addr, "10.0.0.2:7001")
        self.assertEqual(config.data_dir, str(tmp_path / "data"))
        self.assertTrue(os.path.isdir(config.data_dir))
        self.assertEqual((config.executor, config.image), ("process", "busybox:1.36"))
        self.assertEqual(config.allowed_images, ("busybox:*", "registry.local/*"))
        self.assertEqual(
            (config.job_timeout, config.max_job_timeout, config.worker_slots), (10, 60, 8)
        )
        self.assertEqual(config.max_output_bytes, 1024)
        self.assertTrue(config.tls)
        self.assertEqual(config.key, str(files["key"]))
        self.assertEqual(config.auth_token_file, str(tokens))
        self.assertEqual((config.election_timeout_min, config.election_timeout_max), (1000, 2000))
        self.assertEqual((config.heartbeat_interval, config.log_format), (100, "json"))
        self.assertEqual((config.worker_expiry, config.max_attempts), (0.5, 5))
        self.assertEqual(config.stream_stall_timeout, 2.5)
        self.assertEqual(config.cluster_size, 3)

    def test_advertise_addr_defaults_to_host_and_port(self):
        self.assertEqual(parse(host="::1", port="7000").advertise_addr, "[::1]:7000")
        self.assertEqual(parse(host="[::1]").host, "::1")
        self.assertEqual(parse(host="node1.local", port="7000").advertise_addr, "node1.local:7000")

    def test_peer_port_off_turns_it_off(self):
        self.assertIsNone(parse(peer_port="off").peer_port)
        self.assertEqual(parse(peer_port="0", dashboard_port="0").peer_port, 0)

    def test_format_address_brackets_ipv6_hosts(self):
        """The `host:port` the gRPC server binds and peers are dialled at."""
        self.assertEqual(format_address("127.0.0.1", 50051), "127.0.0.1:50051")
        self.assertEqual(format_address("::1", 7000), "[::1]:7000")
        self.assertEqual(format_address("node1.local", 7000), "node1.local:7000")

    def test_max_attempts_may_be_one_to_ten(self):
        self.assertEqual(MAX_ATTEMPTS_LIMIT, 10)
        self.assertEqual(parse(max_attempts="1").max_attempts, 1)
        self.assertEqual(parse(max_attempts="10").max_attempts, 10)
        self.assertEqual(NodeConfig(max_attempts=10).max_attempts, 10)

    def test_max_attempts_above_ten_is_refused_in_one_line(self):
        with self.assertRaises(ConfigError) as caught:
            parse(max_attempts="11")
        self.assertEqual(
            str(caught.exception), "--max-attempts: must be an integer from 1 to 10 (got '11')"
        )
        with self.assertRaises(ConfigError) as caught:
            NodeConfig(max_attempts=11)
        self.assertEqual(
            str(caught.exception), "--max-attempts: must be an integer from 1 to 10 (got 11)"
        )

    def test_direct_construction_is_validated(self):
        with self.assertRaises(ConfigError) as caught:
            NodeConfig(worker_slots=0)
        self.assertRegex(str(caught.exception), "^--worker-slots: ")
        with self.assertRaises(ConfigError) as caught:
            NodeConfig(node_id=True)  # type: ignore[arg-type]
        self.assertRegex(str(caught.exception), "^--node-id: ")

    def test_parse_address(self):
        self.assertEqual(parse_address("--x", "example.com:80"), PeerAddress("example.com", 80))
        self.assertEqual(parse_address("--x", "[2001:db8::1]:443"), PeerAddress("2001:db8::1", 443))

    def test_allowed_images_must_allow_the_default_image(self):
        config = parse(allowed_images="alpine:*,busybox")
        self.assertEqual(config.allowed_images, ("alpine:*", "busybox"))
        self.assertEqual(parse(allowed_images="", image="busybox").allowed_images, ())


class BadOptionTests(ConfigTestCase):
    """Every refused value or combination names the option to change, in one line."""

    def check_bad_value_names_its_option(self, case):
        """One bad value is refused with its own option's name."""
        option, value = case
        with self.assertRaises(ConfigError) as caught:
            parse(**{option: value})
        flag = "--" + option.replace("_", "-")
        self.assertEqual(caught.exception.option, flag)
        message = str(caught.exception)
        self.assertTrue(message.startswith(flag + ": "), message)
        self.assertNotIn("\n", message)

    def check_conflicting_values_name_the_option_to_change(self, case):
        """Values fine alone but conflicting name the option to change."""
        options, flag = case
        with self.assertRaises(ConfigError) as caught:
            parse(**options)
        self.assertEqual(caught.exception.option, flag)

    def test_error_text_is_one_clear_line(self):
        with self.assertRaises(ConfigError) as caught:
            parse(port="abc")
        self.assertEqual(
            str(caught.exception), "--port: must be an integer from 1 to 65535 (got 'abc')"
        )

    def test_unknown_option_is_refused(self):
        with self.assertRaises(ConfigError) as caught:
            NodeConfig.from_options({"colour": "red"})
        self.assertRegex(str(caught.exception), "^--colour: unknown option$")


add_cases(
    BadOptionTests,
    "test_bad_value_names_its_option",
    BAD_VALUES,
    BadOptionTests.check_bad_value_names_its_option,
)
add_cases(
    BadOptionTests,
    "test_conflicting_values_name_the_option_to_change",
    CONFLICTS,
    BadOptionTests.check_conflicting_values_name_the_option_to_change,
)


class PeersTests(ConfigTestCase):
    """--peers: the id:host:port list and the cluster it makes."""

    def test_peers_parsing(self):
        self.assertEqual(parse_peers(""), {})
        self.assertEqual(
            parse_peers(" 2:127.0.0.1:50052 ,3:localhost:50053,"),
            {2: PeerAddress("127.0.0.1", 50052), 3: PeerAddress("localhost", 50053)},
        )
        self.assertEqual(
            parse_peers("2:[::1]:50052,3:[fe80::1]:7000"),
            {2: PeerAddress("::1", 50052), 3: PeerAddress("fe80::1", 7000)},
        )
        self.assertEqual(str(PeerAddress("::1", 50052)), "[::1]:50052")
        self.assertEqual(str(PeerAddress("h", 1)), "h:1")

    def check_bad_peer_entry(self, case):
        """A malformed --peers entry is refused with a pointed message."""
        text, fragment = case
        with self.assertRaises(ConfigError) as caught:
            parse(peers=text)
        self.assertEqual(caught.exception.option, "--peers")
        self.assertIn(fragment, str(caught.exception))

    def test_peers_may_not_list_this_node(self):
        self.assertConfigError("^--peers: lists this node's own id 1", peers="1:127.0.0.1:50052")

    def test_peers_may_not_share_an_address(self):
        self.assertConfigError("^--peers: nodes 2 and 3 share", peers="2:h:1,3:h:1")
        self.assertConfigError("^--peers: nodes 1 and 2 share", peers="2:127.0.0.1:50051")

    def test_cluster_has_at_most_seven_nodes(self):
        six = ",".join(f"{i}:h:{i}" for i in range(2, 8))
        self.assertEqual(parse(peers=six).cluster_size, 7)
        self.assertConfigError("^--peers: a cluster has at most 7 nodes", peers=six + ",8:h:8")


add_cases(PeersTests, "test_bad_peer_entry", BAD_PEERS, PeersTests.check_bad_peer_entry)


class FileOptionTests(ConfigTestCase):
    """--tls with its certificate files, and --data-dir."""

    def test_tls_needs_all_three_files(self):
        tmp_path = self.make_directory()
        pem = tmp_path / "x.pem"
        pem.write_text("pem")
        self.assertConfigError("^--ca-cert: required with --tls", tls=1)
        self.assertConfigError(
            "^--key: required with --tls", tls=1, ca_cert=str(pem), cert=str(pem)
        )
        self.assertConfigError(
            "^--cert: no such file: ",
            tls=1,
            ca_cert=str(pem),
            cert=str(tmp_path / "missing.pem"),
            key=str(pem),
        )
        self.assertConfigError("^--cert: given without --tls", cert=str(pem))

    def tls_options(self, node_id: int = 1, pki: Pki | None = None) -> dict:
        pki = pki or Pki(self.make_directory())
        cert, key = pki.node(node_id)
        return {"tls": 1, "ca_cert": str(pki.ca_path), "cert": str(cert), "key": str(key)}

    def test_tls_files_of_this_node_are_accepted(self):
        config = parse(node_id="1", **self.tls_options(1))
        self.assertEqual(config.tls_files.cert, config.cert)

    def test_another_nodes_certificate_is_refused(self):
        self.assertConfigError(
            "^--cert: is node 2's certificate, not node 1's$", node_id="1", **self.tls_options(2)
        )

    def test_a_certificate_of_another_ca_is_refused(self):
        options = self.tls_options(1)
        options["ca_cert"] = str(Pki(self.make_directory()).ca_path)
        self.assertConfigError("^--cert: was not issued by --ca-cert$", **options)

    def test_a_key_of_another_certificate_is_refused(self):
        pki = Pki(self.make_directory())
        options = self.tls_options(1, pki)
        options["key"] = str(pki.node(2)[1])
        self.assertConfigError("^--key: is not the key of --cert$", **options)

    def test_files_that_are_not_pem_are_refused(self):
        junk = self.make_directory() / "junk.pem"
        junk.write_text("not a certificate")
        for option, message in (
            ("ca_cert", "--ca-cert: holds no PEM certificate"),
            ("cert", "--cert: is not a PEM certificate"),
            ("key", "--key: is not an unencrypted PEM private key"),
        ):
            options = self.tls_options(1)
            options[option] = str(junk)
            self.assertConfigError(f"^{message}$", **options)

    def test_a_client_certificate_is_no_node_certificate(self):
        pki = Pki(self.make_directory())
        client = pki.client()
        cert, key = self.make_directory() / "c.pem", self.make_directory() / "k.pem"
        cert.write_bytes(client.tls.cert)
        key.write_bytes(client.tls.key)
        options = {"tls": 1, "ca_cert": str(pki.ca_path), "cert": str(cert), "key": str(key)}
        self.assertConfigError("^--cert: names no node", **options)

    def test_tokens_need_tls(self):
        tokens = write_token_file(self.make_directory() / "tokens", new_tokens())
        self.assertConfigError(
            r"^--auth-token-file: needs --tls \(without TLS tokens travel in clear",
            auth_token_file=str(tokens),
        )

    def test_a_bad_token_file_names_its_line_and_never_its_text(self):
        directory = self.make_directory()
        cases = {
            "admin only-one-word-and-more extra\n": "line 1: expected `ROLE TOKEN`",
            "# comment\n\nroot abcdefghijklmnopqrstuvwxyz\n": "line 3: the role must be",
            "read short\n": "line 1: a token is at least 16",
            "read abcdefghijklmnopqrstuvwxyz\nadmin abcdefghijklmnopqrstuvwxyz\n": (
                "line 2: repeats the token"
            ),
            "# nothing but a comment\n": "holds no token",
        }
        for text, message in cases.items():
            path = directory / "tokens"
            path.write_text(text)
            with self.assertRaises(ConfigError) as caught:
                parse(auth_token_file=str(path), **self.tls_options())
            self.assertIn(f"--auth-token-file: {message}", str(caught.exception))
            for word in ("only-one-word", "abcdefghijkl", "short", "root"):
                self.assertNotIn(word, str(caught.exception))
        self.assertConfigError(
            "^--auth-token-file: cannot read .*missing",
            auth_token_file=str(directory / "missing"),
            **self.tls_options(),
        )

    def test_data_dir_is_created(self):
        target = self.make_directory() / "a" / "b"
        self.assertEqual(parse(data_dir=str(target)).data_dir, str(target))
        self.assertTrue(target.is_dir())

    def test_data_dir_must_be_a_directory(self):
        a_file = self.make_directory() / "file"
        a_file.write_text("")
        self.assertConfigError("^--data-dir: not a directory", data_dir=str(a_file))
        self.assertConfigError("^--data-dir: cannot create", data_dir=str(a_file / "sub"))

    def test_empty_data_dir_means_memory(self):
        self.assertIsNone(parse(data_dir="").data_dir)


class TwistdOptionsTests(ConfigTestCase):
    """jobsched.tap.Options, as twistd uses it."""

    def test_twistd_options_build_the_config(self):
        options = Options()
        options.parseOptions(["--node-id", "3", "--peers", "1:h:1,2:h:2", "--executor", "process"])
        self.assertEqual(
            options.config,
            NodeConfig(node_id=3, peers=parse_peers("1:h:1,2:h:2"), executor="process"),
        )

    def check_twistd_options_stop_with_one_line(self, case):
        """A bad command line exits with status 2 and one line on stderr."""
        argv, line = case
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(argv)
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual((out.getvalue(), err.getvalue()), ("", line + "\n"))

    def test_tap_module_installs_no_reactor(self):
        """STACK-NOTES pitfall 1: twistd imports jobsched.tap before choosing the reactor."""
        code = "import sys, jobsched.tap; assert 'twisted.internet.reactor' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


add_cases(
    TwistdOptionsTests,
    "test_twistd_options_stop_with_one_line",
    TWISTD_ERRORS,
    TwistdOptionsTests.check_twistd_options_stop_with_one_line,
)
