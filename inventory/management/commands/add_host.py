from django.core.management.base import BaseCommand, CommandError

from inventory import services
from inventory.models import Cluster

from ._util import acting_user, service_errors


class Command(BaseCommand):
    help = "Add a host to a cluster; deployment runs as a Job in the Celery worker."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("address", help="FQDN or IP address of the host agent.")
        parser.add_argument("--cluster", required=True, help="Cluster name.")
        parser.add_argument("--data-center", help="Data center name, when cluster names repeat.")
        parser.add_argument("--port", type=int, default=54321, help="Agent port (default 54321).")
        parser.add_argument("--simulated", action="store_true", help="Serve the host with the simulated driver.")
        parser.add_argument("--user", default="admin", help="Acting user for the audit log (default admin).")

    def handle(self, *args, name, address, cluster, data_center, port, simulated, user, **options):
        clusters = Cluster.objects.filter(name=cluster)
        if data_center:
            clusters = clusters.filter(data_center__name=data_center)
        matches = list(clusters[:2])
        if not matches:
            raise CommandError(f"No cluster named {cluster!r}.")
        if len(matches) > 1:
            raise CommandError(f"Several clusters are named {cluster!r}; give --data-center.")
        with service_errors():
            host, job = services.add_host(
                user=acting_user(user),
                cluster=matches[0],
                name=name,
                address=address,
                agent_port=port,
                simulated=simulated,
            )
        self.stdout.write(f"Host {host.name} added ({host.status}); job {job.pk}: {job.description}")
