"""The agent's config file: INI or JSON, every key optional, typos refused."""

import json

import pytest

from hostagent.agent.config import DEFAULT_PORT, AgentConfig, ConfigError, load_config


def test_an_empty_ini_gives_the_defaults(tmp_path):
    (tmp_path / "agent.conf").write_text("[agent]\n")

    config = load_config(tmp_path / "agent.conf")

    assert config == AgentConfig()
    assert config.listen_port == DEFAULT_PORT == 54321
    assert config.libvirt_uri == "qemu:///system"
    assert config.driver == "libvirt"
    assert config.effective_state_dir == "/var/lib/olvm/storage/states"


def test_ini_values_are_typed_and_relative_paths_follow_the_file(tmp_path):
    (tmp_path / "agent.conf").write_text(
        "[agent]\n"
        "listen_address = 10.213.0.11\n"
        "listen_port = 5000   ; inline comment\n"
        "driver = SIM\n"
        "libvirt_uri = qemu+tcp://10.213.0.11/system\n"
        "cert_file = pki/cert.pem\n"
        "storage_roots = /srv/a, /srv/b/\n    /srv/c\n"
        "request_timeout = 2.5\n"
        "kvm = no\n"
        "engine_url = https://engine.example/api/v1/ingest\n"
    )

    config = load_config(tmp_path / "agent.conf")

    assert config.listen_address == "10.213.0.11"
    assert config.listen_port == 5000
    assert config.driver == "sim"
    assert config.libvirt_uri == "qemu+tcp://10.213.0.11/system"
    assert config.cert_file == str(tmp_path / "pki" / "cert.pem")
    assert config.storage_roots == ("/srv/a", "/srv/b", "/srv/c")
    assert config.request_timeout == 2.5
    assert config.kvm == "no"
    assert config.engine_url == "https://engine.example/api/v1/ingest"


def test_json_at_the_top_level_or_under_agent(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"driver": "sim", "storage_roots": ["/srv/x"], "max_request_bytes": 4096}))
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"agent": {"driver": "sim", "storage_roots": ["/srv/x"], "max_request_bytes": 4096}}))

    assert load_config(flat) == load_config(nested)
    assert load_config(flat).max_request_bytes == 4096


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent]\nlisten_prot = 1\n", "Unknown setting(s): listen_prot"),
        ("[agent]\nlisten_port = 70000\n", "listen_port: must be between 0 and 65535"),
        ("[agent]\nlisten_port = many\n", "listen_port: must be an integer"),
        ("[agent]\ndriver = xen\n", "driver: must be one of libvirt, sim"),
        ("[agent]\nrequest_timeout = -1\n", "request_timeout: must be a positive number"),
        ("[agent]\nstorage_roots =\n", "storage_roots: give at least one directory"),
        ("[agent]\ndisk_cache = fast\n", "disk_cache: must be one of"),
        ("[other]\nx = 1\n", "unknown section(s) other"),
        ('{"listen_port": true}', "listen_port: must be a number"),
        ('{"storage_roots": [1]}', "storage_roots: every entry must be a path"),
        ('{"listen_port": ', "not valid JSON"),
        ("[agent", "not a valid INI file"),
    ],
)
def test_bad_configs_name_the_setting(tmp_path, text, message):
    path = tmp_path / "agent.conf"
    path.write_text(text)

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_config(tmp_path / "nope.conf")
