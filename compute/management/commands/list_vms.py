from django.core.management.base import BaseCommand

from compute.choices import VmStatus
from compute.models import VirtualMachine
from inventory.management.commands._util import table


class Command(BaseCommand):
    help = "List VMs with their cluster, status, host and size."

    def add_arguments(self, parser):
        parser.add_argument("--cluster", help="Only VMs of this cluster (name).")
        parser.add_argument("--status", choices=VmStatus.values, help="Only VMs in this status.")
        parser.add_argument("--limit", type=int, default=500, help="At most this many rows (default 500).")

    def handle(self, *args, cluster=None, status=None, limit=500, **options):
        vms = VirtualMachine.objects.select_related("cluster", "run_on_host").order_by("name")
        if cluster:
            vms = vms.filter(cluster__name=cluster)
        if status:
            vms = vms.filter(status=status)
        rows = [
            (
                vm.name,
                vm.cluster.name,
                vm.status,
                vm.run_on_host.name if vm.run_on_host else "",
                vm.vcpus,
                f"{vm.memory_mib} MiB",
                ", ".join(vm.guest_ips),
            )
            for vm in vms[: max(limit, 0)]
        ]
        self.stdout.write(table(rows, ("NAME", "CLUSTER", "STATUS", "HOST", "VCPUS", "MEMORY", "IPS")))
