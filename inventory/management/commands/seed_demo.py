"""Seed a small demo inventory through the same services as the portal and API.

Idempotent: what exists is kept. Hosts are simulated (labelled so everywhere) unless a
lab registers real ones. The long steps (host deploy, disk images, VM start) run their
Celery tasks in this process (`tasks_inline`), so the demo is ready without a worker.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from compute import services as compute
from compute.models import Template, VirtualMachine
from inventory import services as inventory
from inventory.models import Cluster, DataCenter, Host
from networking import services as networking
from networking.models import LogicalNetwork
from olvm_site.celery import tasks_inline
from storage import services as storage
from storage.models import StorageDomain

from ._util import acting_user, service_errors

GIB = 1024**3


class Command(BaseCommand):
    help = "Create a demo data center, cluster, simulated hosts, storage, networks, a template and VMs."

    def add_arguments(self, parser):
        parser.add_argument("--user", default="admin", help="Acting user for the audit log (default admin).")
        parser.add_argument("--hosts", type=int, default=2, help="Simulated hosts to add when there are none.")

    def handle(self, *args, user, hosts, **options):
        actor = acting_user(user) if user else None
        with service_errors(), tasks_inline():
            self.seed(actor, hosts)

    def log(self, text: str) -> None:
        self.stdout.write(text)

    def seed(self, user, host_count: int) -> None:
        dc = DataCenter.objects.filter(name="Default").first() or inventory.create_data_center(
            user=user, name="Default", description="The default data center"
        )
        cluster = Cluster.objects.filter(data_center=dc, name="Default").first() or inventory.create_cluster(
            user=user, data_center=dc, name="Default", description="The default cluster"
        )
        if not Host.objects.filter(cluster=cluster).exists():
            for number in range(1, host_count + 1):
                host, _ = inventory.add_host(
                    user=user,
                    cluster=cluster,
                    name=f"sim-host-{number:02d}",
                    address=f"sim-host-{number:02d}.sim",
                    simulated=True,
                    description="Simulated host (no hypervisor)",
                )
                self.log(f"host {host.name} (simulated) added")

        domain = StorageDomain.objects.filter(name="data-shared").first()
        if domain is None:
            path = Path(settings.VAR_DIR) / "storage" / "data-shared"
            path.mkdir(parents=True, exist_ok=True)
            domain, _ = storage.create_storage_domain(
                user=user,
                name="data-shared",
                type="posixfs",
                role="data",
                path=str(path),
                data_center=dc,
                shared=True,
                description="Shared POSIX storage for the demo",
            )
            self.log(f"storage domain {domain.name} at {path}")
        domain.refresh_from_db()

        if not LogicalNetwork.objects.filter(data_center=dc, name="vmnet").exists():
            networking.create_network(
                user=user, data_center=dc, name="vmnet", vlan_tag=100, description="VM traffic", clusters=[cluster]
            )
            self.log("network vmnet (VLAN 100)")

        template = Template.objects.filter(name="debian-12", base_template__isnull=True).first()
        if template is None:
            base = VirtualMachine.objects.filter(data_center=dc, name="debian-12-base").first()
            if base is None:
                base, _ = compute.create_vm(
                    user=user,
                    cluster=cluster,
                    name="debian-12-base",
                    os_type="debian_12",
                    memory_mib=2048,
                    guaranteed_memory_mib=1024,
                    description="Base image for the debian-12 template",
                )
                storage.create_disk(
                    user=user,
                    storage_domain=domain,
                    alias="debian-12-base_Disk1",
                    provisioned_size=10 * GIB,
                    format="qcow2",
                    allocation="thin",
                    vm=base,
                    bootable=True,
                )
            template, _ = compute.create_template(user=user, name="debian-12", vm=base)
            self.log(f"template {template}")

        profile = LogicalNetwork.objects.get(data_center=dc, name="vmnet").vnic_profiles.first()
        for name, run in (("web-01", True), ("web-02", True), ("db-01", False)):
            if VirtualMachine.objects.filter(data_center=dc, name=name).exists():
                continue
            vm, _ = compute.create_vm(user=user, cluster=cluster, name=name, template=template)
            networking.create_nic(vm, user=user, profile=profile)
            if run:
                compute.start_vm(vm, user=user)
            self.log(f"VM {name}" + (" (running)" if run else ""))
        self.log("demo inventory ready")
