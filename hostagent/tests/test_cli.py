"""`python -m hostagent ...` as a host would run it: its own process, no Django inside."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hostagent.agent.testing import make_pki
from hostagent.client import HostAddress, RemoteAgentClient

REPO = Path(__file__).resolve().parents[2]


def run(*args, timeout=60, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env, **kwargs
    )


def test_the_agent_and_the_engine_client_import_no_django():
    code = (
        "import sys\n"
        "import hostagent.__main__, hostagent.pki, hostagent.client, hostagent.agent.server\n"
        "import hostagent.agent.drivers.libvirt_driver, hostagent.agent.drivers.sim_driver\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'rest_framework', 'celery', 'channels'}))\n"
    )

    done = run("-c", code)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_make_ca_issue_cert_and_cert_info(tmp_path):
    made = run("-m", "hostagent", "make-ca", str(tmp_path / "ca"), "--cn", "Lab CA")
    issued = run(
        "-m",
        "hostagent",
        "issue-cert",
        "--ca-dir",
        str(tmp_path / "ca"),
        "--cn",
        "10.213.0.11",
        "--out",
        str(tmp_path / "h1"),
        "--address",
        "10.213.0.11",
        "--address",
        "h1.lab",
    )
    info = run("-m", "hostagent", "cert-info", str(tmp_path / "h1" / "cert.pem"))
    again = run("-m", "hostagent", "make-ca", str(tmp_path / "ca"))

    assert made.returncode == 0 and json.loads(made.stdout)["common_name"] == "Lab CA"
    assert issued.returncode == 0
    assert json.loads(issued.stdout)["fingerprint_sha256"] == json.loads(info.stdout)["fingerprint_sha256"]
    assert json.loads(info.stdout)["addresses"] == ["10.213.0.11", "h1.lab"]
    assert json.loads(info.stdout)["issuer"] == "Lab CA"
    assert again.returncode == 2 and "already there" in again.stderr


@pytest.fixture
def served(tmp_path):
    """`python -m hostagent serve` with the sim driver on an ephemeral port; its port."""
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "storage").mkdir()
    config = tmp_path / "agent.conf"
    config.write_text(
        "[agent]\n"
        "listen_address = 127.0.0.1\n"
        "listen_port = 0\n"
        "driver = sim\n"
        "host_name = cli-h1\n"
        f"cert_file = {pki.server['cert_file']}\n"
        f"key_file = {pki.server['key_file']}\n"
        f"ca_file = {pki.server['ca_file']}\n"
        "storage_roots = storage\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostagent", "serve", "--config", str(config)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            found = re.search(r"listening on https://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port, "the agent did not say where it listens"
        # Keep reading its log so a full pipe never blocks the agent.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield proc, port, pki
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_answers_mtls_json_rpc_and_stops_on_sigterm(served):
    proc, port, pki = served
    host = HostAddress(id="h", name="cli-h1", address="127.0.0.1", port=port, simulated=False)
    client = RemoteAgentClient(
        host, cert_file=pki.client["cert_file"], key_file=pki.client["key_file"], ca_file=pki.client["ca_file"]
    )

    caps = client.capabilities()
    proc.send_signal(signal.SIGTERM)

    assert caps["hostname"] == "cli-h1.simulated" and caps["simulated"] is True
    assert proc.wait(timeout=15) == 0


def test_the_call_helper_talks_to_a_served_agent(served, tmp_path):
    _, port, pki = served

    done = run(
        "-m",
        "hostagent",
        "call",
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--cert-dir",
        str(Path(pki.client["cert_file"]).parent),
        "destroy_vm",
        '{"vm_id": "7d4c5a4e-1f7e-4bb6-9a9e-0d2f3f1f2a10"}',
    )
    bad = run(
        "-m",
        "hostagent",
        "call",
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--cert-dir",
        str(Path(pki.client["cert_file"]).parent),
        "destroy_vm",
        '{"vm_id": "x"}',
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "vm_id": "7d4c5a4e-1f7e-4bb6-9a9e-0d2f3f1f2a10",
        "status": "down",
        "existed": False,
        "simulated": True,
    }
    assert bad.returncode == 1 and "params.vm_id: must be a UUID" in bad.stderr


def test_serve_refuses_to_start_without_its_certificate(tmp_path):
    config = tmp_path / "agent.json"
    config.write_text(
        json.dumps({"driver": "sim", "listen_port": 0, "cert_file": "nope.pem", "storage_roots": [str(tmp_path)]})
    )

    done = run("-m", "hostagent", "serve", "--config", str(config))

    assert done.returncode == 2
    assert "cannot load the TLS certificate" in done.stderr


def test_serve_refuses_a_bad_config(tmp_path):
    config = tmp_path / "agent.conf"
    config.write_text("[agent]\nlisten_prot = 5\n")

    done = run("-m", "hostagent", "serve", "--config", str(config))

    assert done.returncode == 2
    assert done.stderr.strip() == "error: Unknown setting(s): listen_prot"
