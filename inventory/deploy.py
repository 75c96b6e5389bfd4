"""Host deploy: put the engine's certificate and the agent's configuration on a host and
start its agent (oVirt's host-deploy, reduced to what a thin agent needs).

Three ways, chosen per host by `deployer_for`:

- lab hosts (the host's address is a lab host of `hostagent.lab`): the files are written
  into the lab host's own directory and the agent is started inside its namespace through
  the lab tool (`hostagent.lab.core.start_agent`);
- remote hosts: over SSH with the engine's key (`OLVM_DEPLOY_SSH_KEY`): the files are
  copied to /etc/olvm/agent/ and the `olvm-agent` systemd unit is restarted (docs/deploy.md
  lists what the host needs first);
- simulated hosts without an address of their own are served in-process: nothing to do.

Each returns once the agent was started; the deploy task then waits for it to answer.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from hostagent.pki import CA_CERT, CERT_FILE, KEY_FILE

from .certs import CertPaths, ingest_listen
from .models import Host

AGENT_PORT = 54321


class DeployError(Exception):
    """The host could not be set up; the message says what failed, for the audit log."""


def engine_url_for(address: str) -> str:
    """The ingest URL for agents that reach the engine at `address`."""
    ports = [port for listen_address, port in ingest_listen() if listen_address in (address, "0.0.0.0", "::")]  # noqa: S104
    if not ports:
        raise DeployError(
            f"The engine's ingest listener does not listen on {address} (OLVM_INGEST_LISTEN="
            f"{settings.OLVM_INGEST_LISTEN}); agents there could not report."
        )
    return f"https://{address}:{ports[0]}/ingest"


def agent_config(host: Host, *, cert_dir: str, storage_roots: list[str], engine_url: str, **extra) -> str:
    lines = [
        "# Written by the OLVM engine's host deploy; changes are overwritten at the next deploy.",
        "[agent]",
        f"listen_address = {extra.pop('listen_address', '0.0.0.0')}",  # noqa: S104
        f"listen_port = {host.agent_port}",
        "driver = libvirt",
        f"libvirt_uri = {extra.pop('libvirt_uri', 'qemu:///system')}",
        f"cert_file = {cert_dir}/{CERT_FILE}",
        f"key_file = {cert_dir}/{KEY_FILE}",
        f"ca_file = {cert_dir}/{CA_CERT}",
        f"storage_roots = {', '.join(storage_roots)}",
        f"engine_url = {engine_url}",
        f"host_name = {host.name}",
    ]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


class LabDeployer:
    """A host of the lab tool on this machine."""

    def __init__(self, lab_host, state_dir: Path):
        self.lab_host = lab_host
        self.state_dir = state_dir

    def describe(self) -> str:
        return f"lab host {self.lab_host.name} ({self.lab_host.namespace})"

    def install(self, host: Host, certs: CertPaths) -> None:
        from hostagent.lab import core

        info = core.lab_info(self.state_dir)
        agent_dir = self.lab_host.host_dir / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        for src, name in ((certs.cert_file, CERT_FILE), (certs.key_file, KEY_FILE), (certs.ca_file, CA_CERT)):
            shutil.copy2(src, agent_dir / name)
        (agent_dir / KEY_FILE).chmod(0o600)
        kvm = info.get("kvm") or {}
        config = agent_config(
            host,
            cert_dir=str(agent_dir),
            storage_roots=[info.get("shared_dir") or str(self.lab_host.shared_dir)],
            engine_url=engine_url_for(info.get("engine_ip") or core.BRIDGE_IP),
            listen_address=self.lab_host.ip,
            # Nested KVM hangs on these machines: only where the lab's probe booted a guest.
            kvm="auto" if kvm.get("works") else "no",
            # The shared directory may be on tmpfs or overlayfs, which refuse O_DIRECT.
            disk_cache="writeback",
            heartbeat_interval=settings.OLVM_AGENT_HEARTBEAT_INTERVAL,
            stats_interval=settings.OLVM_AGENT_STATS_INTERVAL,
            guest_info_interval=settings.OLVM_AGENT_GUEST_INFO_INTERVAL,
        )
        (agent_dir / "agent.conf").write_text(config)
        argv = [sys.executable, "-m", "hostagent", "serve", "--config", str(agent_dir / "agent.conf")]
        try:
            core.start_agent(self.lab_host.name, argv, self.state_dir)
        except core.LabError as exc:
            raise DeployError(f"The lab could not start the agent on {self.lab_host.name}: {exc}") from None


class SshDeployer:
    """A real host reached over SSH (key-based, as oVirt's host-deploy)."""

    REMOTE_DIR = "/etc/olvm/agent"

    def describe(self) -> str:
        return "SSH"

    def install(self, host: Host, certs: CertPaths) -> None:
        key = settings.OLVM_DEPLOY_SSH_KEY
        if not key:
            raise DeployError(
                f"Host {host.name} ({host.address}) is not a lab host and OLVM_DEPLOY_SSH_KEY is not set: "
                "the engine cannot log in to install its agent (see docs/deploy.md)."
            )
        if not settings.OLVM_ENGINE_ADDRESS:
            raise DeployError("OLVM_ENGINE_ADDRESS is not set: the agent would not know where to report.")
        target = f"{settings.OLVM_DEPLOY_SSH_USER}@{host.address}"
        ssh = ["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        config = agent_config(
            host,
            cert_dir=self.REMOTE_DIR,
            storage_roots=["/var/lib/olvm/storage"],
            engine_url=engine_url_for(settings.OLVM_ENGINE_ADDRESS),
        )
        d = shlex.quote(self.REMOTE_DIR)
        steps = [
            [*ssh, target, f"install -d -m 0700 {d}"],
            ["scp", "-i", key, "-o", "BatchMode=yes", certs.cert_file, certs.ca_file, f"{target}:{self.REMOTE_DIR}/"],
            ["scp", "-i", key, "-o", "BatchMode=yes", certs.key_file, f"{target}:{self.REMOTE_DIR}/{KEY_FILE}"],
            [*ssh, target, f"cat > {d}/agent.conf && chmod 0600 {d}/{KEY_FILE} && systemctl restart olvm-agent"],
        ]
        for argv in steps:
            try:
                proc = subprocess.run(  # noqa: S603 - fixed argv, no shell on this side
                    argv,
                    input=config if argv is steps[-1] else None,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise DeployError(f"{argv[0]} to {host.address} failed: {exc}") from None
            if proc.returncode != 0:
                raise DeployError(f"{argv[0]} to {host.address} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")


def lab_state_dir() -> Path:
    from hostagent.lab import core

    return Path(getattr(settings, "OLVM_LAB_STATE_DIR", "") or core.DEFAULT_STATE_DIR)


def deployer_for(host: Host):
    """How to reach `host` for deploy: the lab tool, SSH, or nothing (in-process simulation)."""
    if host.simulated:
        return None
    from hostagent.lab import core

    try:
        lab_host = core.host_by_address(host.address, lab_state_dir())
    except core.LabError:
        lab_host = None
    if lab_host is not None:
        return LabDeployer(lab_host, lab_state_dir())
    return SshDeployer()
