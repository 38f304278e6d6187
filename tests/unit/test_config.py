"""NodeConfig: defaults, parsing of option text, and one clear error per bad option."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jobsched.config import ConfigError, NodeConfig, PeerAddress, parse_address, parse_peers
from jobsched.tap import Options

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(**options: object) -> NodeConfig:
    """NodeConfig from option text keyed as on the command line (`node_id` = --node-id)."""
    return NodeConfig.from_options({k.replace("_", "-"): v for k, v in options.items()})


def test_defaults() -> None:
    config = parse()
    assert config == NodeConfig()
    assert config.node_id == 1
    assert (config.host, config.port, config.dashboard_port) == ("127.0.0.1", 50051, 8081)
    assert config.peers == {}
    assert config.advertise_addr == config.client_address == "127.0.0.1:50051"
    assert config.bind_address == "127.0.0.1:50051"
    assert config.data_dir is None
    assert (config.executor, config.image) == ("docker", "alpine:latest")
    assert config.allowed_images == ()
    assert (config.job_timeout, config.max_job_timeout) == (30, 3600)
    assert (config.worker_slots, config.max_output_bytes) == (4, 65536)
    assert (config.tls, config.ca_cert, config.cert, config.key) == (False, None, None, None)
    assert (config.election_timeout_min, config.election_timeout_max) == (150, 300)
    assert config.heartbeat_interval == 50
    assert config.log_format == "text"
    assert (config.worker_expiry, config.max_attempts) == (5.0, 3)
    assert (config.cluster_size, config.majority) == (1, 1)


def test_none_values_take_defaults() -> None:
    assert NodeConfig.from_options({"port": None, "tls": 0}) == NodeConfig()


def test_parses_every_option(tmp_path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("pem")
    config = parse(
        node_id="2",
        host="0.0.0.0",
        port="7001",
        dashboard_port="0",
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
        election_timeout_min="1000",
        election_timeout_max="2000",
        heartbeat_interval="100",
        log_format="json",
        worker_expiry="0.5",
        max_attempts="5",
    )
    assert config.node_id == 2
    assert (config.host, config.port, config.dashboard_port) == ("0.0.0.0", 7001, 0)
    assert config.peers == {
        1: PeerAddress("10.0.0.1", 7000),
        3: PeerAddress("node3.example.com", 7002),
    }
    assert config.client_address == "10.0.0.2:7001"
    assert config.data_dir == str(tmp_path / "data") and os.path.isdir(config.data_dir)
    assert (config.executor, config.image) == ("process", "busybox:1.36")
    assert config.allowed_images == ("busybox:*", "registry.local/*")
    assert (config.job_timeout, config.max_job_timeout, config.worker_slots) == (10, 60, 8)
    assert config.max_output_bytes == 1024
    assert config.tls and config.key == str(files["key"])
    assert (config.election_timeout_min, config.election_timeout_max) == (1000, 2000)
    assert (config.heartbeat_interval, config.log_format) == (100, "json")
    assert (config.worker_expiry, config.max_attempts) == (0.5, 5)
    assert (config.cluster_size, config.majority) == (3, 2)


def test_advertise_addr_defaults_to_host_and_port() -> None:
    assert parse(host="::1", port="7000").client_address == "[::1]:7000"
    assert parse(host="[::1]").host == "::1"
    assert parse(host="node1.local", port="7000").client_address == "node1.local:7000"


@pytest.mark.parametrize(
    "option, value",
    [
        ("node_id", "0"),
        ("node_id", "-1"),
        ("node_id", "abc"),
        ("node_id", str(2**63)),
        ("host", "bad host"),
        ("host", ""),
        ("port", "abc"),
        ("port", "0"),
        ("port", "65536"),
        ("port", "1.5"),
        ("dashboard_port", "-1"),
        ("dashboard_port", "70000"),
        ("peers", "2:nohost"),
        ("peers", "x:host:1"),
        ("advertise_addr", "nohost"),
        ("advertise_addr", "host:0"),
        ("advertise_addr", "::1:7000"),
        ("executor", "foo"),
        ("executor", ""),
        ("image", "-rm"),
        ("image", "UPPER/Case"),
        ("job_timeout", "0"),
        ("max_job_timeout", "0"),
        ("worker_slots", "0"),
        ("worker_slots", "two"),
        ("max_output_bytes", "0"),
        ("tls", "maybe"),
        ("election_timeout_min", "0"),
        ("heartbeat_interval", "0"),
        ("log_format", "xml"),
        ("worker_expiry", "0"),
        ("worker_expiry", "soon"),
        ("worker_expiry", "inf"),
        ("max_attempts", "0"),
    ],
)
def test_bad_value_names_its_option(option: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**{option: value})
    flag = "--" + option.replace("_", "-")
    assert info.value.option == flag
    message = str(info.value)
    assert message.startswith(flag + ": ") and "\n" not in message


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"job_timeout": "7200"}, "--job-timeout"),
        ({"max_job_timeout": "10"}, "--job-timeout"),
        ({"dashboard_port": "50051"}, "--dashboard-port"),
        ({"election_timeout_max": "150"}, "--election-timeout-max"),
        ({"election_timeout_min": "400"}, "--election-timeout-max"),
        ({"heartbeat_interval": "150"}, "--heartbeat-interval"),
        ({"allowed_images": "registry.local/*"}, "--image"),
    ],
)
def test_conflicting_values_name_the_option_to_change(options: dict, flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**options)
    assert info.value.option == flag


def test_error_text_is_one_clear_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse(port="abc")
    assert str(info.value) == "--port: must be an integer from 1 to 65535 (got 'abc')"


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="^--colour: unknown option$"):
        NodeConfig.from_options({"colour": "red"})


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="^--worker-slots: "):
        NodeConfig(worker_slots=0)
    with pytest.raises(ConfigError, match="^--node-id: "):
        NodeConfig(node_id=True)  # type: ignore[arg-type]


def test_peers_parsing() -> None:
    assert parse_peers("") == {}
    assert parse_peers(" 2:127.0.0.1:50052 ,3:localhost:50053,") == {
        2: PeerAddress("127.0.0.1", 50052),
        3: PeerAddress("localhost", 50053),
    }
    assert parse_peers("2:[::1]:50052,3:[fe80::1]:7000") == {
        2: PeerAddress("::1", 50052),
        3: PeerAddress("fe80::1", 7000),
    }
    assert str(PeerAddress("::1", 50052)) == "[::1]:50052"
    assert str(PeerAddress("h", 1)) == "h:1"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("2", "expected id:host:port"),
        ("2:nohost", "expected host:port"),
        ("2:host:", "port must be"),
        ("2:host:abc", "port must be"),
        ("2:host:70000", "port must be"),
        ("0:host:1", "node id"),
        ("x:host:1", "node id"),
        ("2:::1:7000", "put IPv6 addresses in brackets"),
        ("2:[::1]7000", "expected [ipv6]:port"),
        ("2:[not-ip]:7000", "invalid IPv6 address"),
        ("2:bad host:7000", "invalid host"),
        ("2:h:1,2:g:2", "node id 2 appears twice"),
    ],
)
def test_bad_peer_entries(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(peers=text)
    assert info.value.option == "--peers"
    assert fragment in str(info.value)


def test_peers_may_not_list_this_node() -> None:
    with pytest.raises(ConfigError, match="^--peers: lists this node's own id 1"):
        parse(peers="1:127.0.0.1:50052")


def test_peers_may_not_share_an_address() -> None:
    with pytest.raises(ConfigError, match="^--peers: nodes 2 and 3 share"):
        parse(peers="2:h:1,3:h:1")
    with pytest.raises(ConfigError, match="^--peers: nodes 1 and 2 share"):
        parse(peers="2:127.0.0.1:50051")


def test_cluster_has_at_most_seven_nodes() -> None:
    six = ",".join(f"{i}:h:{i}" for i in range(2, 8))
    assert parse(peers=six).cluster_size == 7
    with pytest.raises(ConfigError, match="^--peers: a cluster has at most 7 nodes"):
        parse(peers=six + ",8:h:8")


def test_parse_address() -> None:
    assert parse_address("--x", "example.com:80") == PeerAddress("example.com", 80)
    assert parse_address("--x", "[2001:db8::1]:443") == PeerAddress("2001:db8::1", 443)


def test_tls_needs_all_three_files(tmp_path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("pem")
    with pytest.raises(ConfigError, match="^--ca-cert: required with --tls"):
        parse(tls=1)
    with pytest.raises(ConfigError, match="^--key: required with --tls"):
        parse(tls=1, ca_cert=str(pem), cert=str(pem))
    with pytest.raises(ConfigError, match="^--cert: no such file: "):
        parse(tls=1, ca_cert=str(pem), cert=str(tmp_path / "missing.pem"), key=str(pem))
    with pytest.raises(ConfigError, match="^--cert: given without --tls"):
        parse(cert=str(pem))


def test_data_dir_is_created(tmp_path) -> None:
    target = tmp_path / "a" / "b"
    assert parse(data_dir=str(target)).data_dir == str(target)
    assert target.is_dir()


def test_data_dir_must_be_a_directory(tmp_path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="^--data-dir: not a directory"):
        parse(data_dir=str(a_file))
    with pytest.raises(ConfigError, match="^--data-dir: cannot create"):
        parse(data_dir=str(a_file / "sub"))


def test_empty_data_dir_means_memory() -> None:
    assert parse(data_dir="").data_dir is None


def test_allowed_images_must_allow_the_default_image() -> None:
    config = parse(allowed_images="alpine:*,busybox")
    assert config.allowed_images == ("alpine:*", "busybox")
    assert parse(allowed_images="", image="busybox").allowed_images == ()


def test_twistd_options_build_the_config() -> None:
    options = Options()
    options.parseOptions(["--node-id", "3", "--peers", "1:h:1,2:h:2", "--executor", "process"])
    assert options.config == NodeConfig(
        node_id=3, peers=parse_peers("1:h:1,2:h:2"), executor="process"
    )


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--port", "x"], "jobsched: error: --port: must be an integer from 1 to 65535 (got 'x')"),
        (["--nope"], "jobsched: error: option --nope not recognized"),
        (["stray"], "jobsched: error: unexpected argument 'stray' (all settings are --options)"),
    ],
)
def test_twistd_options_stop_with_one_line(argv: list[str], line: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        Options().parseOptions(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", line + "\n")


def test_tap_module_installs_no_reactor() -> None:
    """STACK-NOTES pitfall 1: twistd imports jobsched.tap before choosing the reactor."""
    code = "import sys, jobsched.tap; assert 'twisted.internet.reactor' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
