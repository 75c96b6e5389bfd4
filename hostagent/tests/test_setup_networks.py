"""setup_networks: a Linux bridge per logical network on the host, idempotent."""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from hostagent.agent.config import config_from_dict
from hostagent.agent.drivers.sim_driver import SimDriver
from hostagent.agent.errors import InvalidParams
from hostagent.agent.verbs import VERBS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_verb_validates_bridge_names_and_vlans():
    verb = VERBS["setup_networks"]
    assert verb.validate({"networks": [{"name": "ovirtmgmt", "vlan": 10, "mtu": 1500}]})["networks"][0]["vlan"] == 10
    for bad, field in (
        ({"name": "a" * 16}, "name"),
        ({"name": "bad name"}, "name"),
        ({"name": "ok", "vlan": 4095}, "vlan"),
    ):
        with pytest.raises(InvalidParams) as info:
            verb.validate({"networks": [bad]})
        assert field in info.value.field


def test_the_sim_driver_remembers_its_bridges(tmp_path):
    driver = SimDriver(config_from_dict({"driver": "sim", "storage_roots": [str(tmp_path)], "host_name": "s1"}))
    first = driver.setup_networks([{"name": "ovirtmgmt", "vlan": None, "mtu": None}])
    again = driver.setup_networks([{"name": "ovirtmgmt", "vlan": None, "mtu": None}])
    assert first["networks"][0]["created"] and not again["networks"][0]["created"]


def test_a_real_bridge_is_made_once_in_a_network_namespace():
    assert os.geteuid() == 0 and shutil.which("ip"), "needs root and iproute2 (as the lab tests do)"
    namespace = f"olvm-t-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        code = (
            "from hostagent.agent.drivers.libvirt_driver import ensure_bridge; import json; "
            "print(json.dumps([ensure_bridge('vmnet', 1400), ensure_bridge('vmnet', 1400)]))"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        assert '"created": true' in out and out.count('"created": false') == 1
        link = subprocess.run(
            ["ip", "netns", "exec", namespace, "ip", "-d", "link", "show", "vmnet"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "bridge" in link and "mtu 1400" in link and "UP" in link.split(">")[0]
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
