"""Fixtures for the lab tests: real namespaces, real libvirtd, a real tiny guest.

They need root and the lab packages (scripts/lab-packages.sh). Without them the tests
are skipped on a developer's machine, and fail under CI (CI=true), where a skip would hide
a missing install step. The lab's bridge and namespace names are global, so one lab test
module runs at a time on a machine (a lock held for the module, also under pytest-xdist),
and they skip when a developer's own lab is up.
"""

import fcntl
import gc
import os
from pathlib import Path

import pytest

from hostagent.lab import core

TEST_LOCK = Path("/run/lock/olvm-lab-tests.lock") if Path("/run/lock").is_dir() else Path("/run/olvm-lab-tests.lock")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: needs root, libvirt and qemu: builds lab hosts in network namespaces on this machine"
    )


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"lab tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_images():
    """The tiny guest image (built by scripts/build-guest-image.sh when missing)."""
    try:
        core.check_environment()
        core.build_image(core.IMAGES_DIR)
    except core.LabError as exc:
        _unavailable(str(exc))
    return core.IMAGES_DIR


@pytest.fixture(scope="module")
def lab_state_dir(lab_images, tmp_path_factory):
    """A two-host lab for the module, in its own state dir; torn down at the end."""
    with open(TEST_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if core._namespaces() or Path("/sys/class/net", core.BRIDGE).exists():
            pytest.skip("a lab is already up on this machine (python -m hostagent.lab down first)")
        state_dir = tmp_path_factory.mktemp("lab")
        try:
            yield state_dir
        finally:
            # libvirt objects a test left in a reference cycle (a frame kept by a caught
            # exception's traceback) are freed here, while their daemons still answer: freed
            # later, their connection's close waits on a host that is gone, for minutes.
            gc.collect()
            core.down(state_dir)


@pytest.fixture
def lab_hosts(lab_state_dir):
    """Two running hosts: ``up`` is idempotent, so every test starts from a healthy lab."""
    hosts = core.up(2, lab_state_dir, probe_kvm=False)
    for host in hosts:
        if core.status(lab_state_dir)[host.index - 1]["failed"]:
            core.heal(host.name, lab_state_dir)
    return hosts
