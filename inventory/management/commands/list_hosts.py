from django.core.management.base import BaseCommand

from inventory.choices import HostStatus
from inventory.models import Host

from ._util import table


class Command(BaseCommand):
    help = "List hosts with their cluster, status, CPU and memory."

    def add_arguments(self, parser):
        parser.add_argument("--cluster", help="Only hosts of this cluster (name).")
        parser.add_argument("--status", choices=HostStatus.values, help="Only hosts in this status.")

    def handle(self, *args, cluster=None, status=None, **options):
        hosts = Host.objects.select_related("cluster__data_center").order_by("name")
        if cluster:
            hosts = hosts.filter(cluster__name=cluster)
        if status:
            hosts = hosts.filter(status=status)
        rows = [
            (
                h.name,
                h.address,
                h.cluster.name,
                h.cluster.data_center.name,
                h.status,
                f"{h.cpu_threads} threads",
                f"{h.memory_mib} MiB",
                "simulated" if h.simulated else "",
            )
            for h in hosts
        ]
        self.stdout.write(table(rows, ("NAME", "ADDRESS", "CLUSTER", "DATA CENTER", "STATUS", "CPU", "MEMORY", "")))
