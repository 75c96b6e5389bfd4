"""`manage.py simulate --hosts N --vms-per-host M`: the engine's half of a simulator run.

Creates (or completes: it is idempotent) N simulated hosts `sim-0001` ... at 127.0.0.1
on ports port-base, port-base + 1, ..., each with a certificate from the engine CA, and M
VMs running on each (`sim-0001-vm-01` ...); then writes the manifest that
`python -m hostagent simulate --manifest FILE` serves: one process running every host's
agent (sim driver, JSON-RPC over mutual TLS, push to the ingest listener). With --run it
starts that process too and says how to stop it.

The hosts are flagged simulated (so labelled in the API and the portal), but unlike the
in-process simulated hosts of seed_demo they have certificates: the engine reaches them
with the real client (`inventory.servicekit.agent_for`), over the network.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from compute import services as compute
from compute.models import VirtualMachine
from compute.statemachine import RUNNING
from inventory import services as inventory
from inventory.certs import ensure_ca, host_cert_paths, ingest_listen
from inventory.models import Cluster, DataCenter

from ._util import acting_user, service_errors

# Above Linux's ephemeral ports (32768-60999 by default): a port an outgoing connection holds
# cannot be bound, and a thousand hosts from 56000 would meet some.
DEFAULT_PORT_BASE = 61000


def default_manifest() -> Path:
    return Path(settings.VAR_DIR) / "sim" / "manifest.json"


class Command(BaseCommand):
    help = (
        "Create simulated hosts with certificates and running VMs for `python -m hostagent simulate`, "
        "write its manifest and, with --run, start it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hosts", type=int, required=True, help="Simulated hosts sim-0001 ... (N).")
        parser.add_argument("--vms-per-host", type=int, default=20, help="VMs running on each host (default 20).")
        parser.add_argument("--cluster", default="Default", help="Cluster of the hosts (created when missing).")
        parser.add_argument(
            "--port-base",
            type=int,
            default=DEFAULT_PORT_BASE,
            help=f"Agent port of sim-0001 (default {DEFAULT_PORT_BASE}).",
        )
        parser.add_argument("--manifest", help="Where to write the manifest (default var/sim/manifest.json).")
        parser.add_argument(
            "--engine-url", help="The ingest URL the hosts push to (default: the first OLVM_INGEST_LISTEN address)."
        )
        parser.add_argument("--run", action="store_true", help="Start `python -m hostagent simulate` on the manifest.")
        parser.add_argument("--user", help="Acting user for the audit log (default: the system).")

    def handle(self, *args, **options):
        count, per_host, port_base = options["hosts"], options["vms_per_host"], options["port_base"]
        if count < 1 or per_host < 0:
            raise CommandError("--hosts must be at least 1 and --vms-per-host at least 0.")
        if port_base < 1024 or port_base + count - 1 > 65535:
            raise CommandError(f"Ports {port_base}-{port_base + count - 1} are not all between 1024 and 65535.")
        manifest_path = Path(options["manifest"]).resolve() if options["manifest"] else default_manifest()
        running = _running_pid(manifest_path.with_name("simulate.pid")) if options["run"] else None
        if running:
            raise CommandError(f"A simulator already runs (pid {running}); stop it first: kill {running}")
        user = acting_user(options["user"])
        started = time.monotonic()
        with service_errors():
            cluster = self.cluster(options["cluster"], user)
            wanted = [(f"sim-{i:04d}", port_base + i - 1) for i in range(1, count + 1)]
            hosts, hosts_created = inventory.add_simulated_hosts(user=user, cluster=cluster, hosts=wanted)
            vms_created = compute.add_simulated_vms(user=user, hosts=hosts, per_host=per_host)
        manifest = build_manifest(hosts, options["engine_url"] or default_engine_url())
        write_manifest(manifest_path, manifest)
        vm_total = sum(len(h["vms"]) for h in manifest["hosts"])
        self.stdout.write(
            f"{len(hosts)} simulated hosts ({hosts_created} new) and {vm_total} running VMs ({vms_created} new) "
            f"in cluster {cluster.name}, in {time.monotonic() - started:.1f} s"
        )
        self.stdout.write(f"Manifest: {manifest_path}")
        if options["run"]:
            self.run_simulator(manifest_path)
        else:
            self.stdout.write(f"Run them: {sys.executable} -m hostagent simulate --manifest {manifest_path}")

    def cluster(self, name: str, user) -> Cluster:
        clusters = list(Cluster.objects.filter(name=name).select_related("data_center"))
        if len(clusters) > 1:
            raise CommandError(f"{len(clusters)} clusters are named {name!r}; rename one or choose another.")
        if clusters:
            return clusters[0]
        dc = DataCenter.objects.filter(name="Default").first() or inventory.create_data_center(
            user=user, name="Default", description="The default data center"
        )
        self.stdout.write(f"cluster {name} created in data center {dc.name}")
        return inventory.create_cluster(user=user, data_center=dc, name=name, description="Simulated hosts")

    def run_simulator(self, manifest_path: Path) -> None:
        pid_file = manifest_path.with_name("simulate.pid")
        log_file = manifest_path.with_name("simulate.log")
        with open(log_file, "ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "hostagent", "simulate", "--manifest", str(manifest_path)],
                cwd=settings.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_file.write_text(f"{process.pid}\n")
        self.stdout.write(f"Simulator started: pid {process.pid}, log {log_file}")
        self.stdout.write(f"Stop it: kill {process.pid}")


def default_engine_url() -> str:
    listen = ingest_listen()
    if not listen:
        raise CommandError("OLVM_INGEST_LISTEN is empty: give --engine-url.")
    address, port = listen[0]
    if address in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard listener is reached on loopback here
        address = "127.0.0.1"
    return f"https://{address}:{port}/ingest"


def build_manifest(hosts, engine_url: str) -> dict:
    """What `hostagent.simulate` reads: each host with the VMs the engine has running on it."""
    running: dict = {h.pk: [] for h in hosts}
    rows = (
        VirtualMachine.objects.filter(run_on_host__in=[h.pk for h in hosts], status__in=RUNNING)
        .order_by("name")
        .values_list("run_on_host_id", "id", "name", "vcpus", "memory_mib")
    )
    for host_id, vm_id, name, vcpus, memory_mib in rows:
        running[host_id].append({"id": str(vm_id), "name": name, "vcpus": vcpus, "memory_mib": memory_mib})
    ca_file = str(ensure_ca() / "ca.pem")
    entries = []
    for host in hosts:
        paths = host_cert_paths(host)
        entries.append(
            {
                "id": str(host.pk),
                "name": host.name,
                "port": host.agent_port,
                "cert_file": paths.cert_file,
                "key_file": paths.key_file,
                "vms": running[host.pk],
            }
        )
    return {
        "version": 1,
        "engine_url": engine_url,
        "ca_file": ca_file,
        "heartbeat_interval": settings.OLVM_AGENT_HEARTBEAT_INTERVAL,
        "stats_interval": settings.OLVM_AGENT_STATS_INTERVAL,
        "guest_info_interval": settings.OLVM_AGENT_GUEST_INFO_INTERVAL,
        "hosts": entries,
    }


def write_manifest(path: Path, manifest: dict) -> None:
    """Atomically, readable by its owner only (it names the hosts' private keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, path)


def _running_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid
