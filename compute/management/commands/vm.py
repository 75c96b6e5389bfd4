from django.core.management.base import BaseCommand, CommandError

from compute import services
from compute.models import VirtualMachine
from inventory.management.commands._util import acting_user, service_errors

ACTIONS = {
    "start": services.start_vm,
    "shutdown": services.shutdown_vm,
    "stop": services.stop_vm,
    "reboot": services.reboot_vm,
    "suspend": services.suspend_vm,
    "resume": services.resume_vm,
}


class Command(BaseCommand):
    help = "Run a VM action (start, shutdown, stop = power off, reboot, suspend, resume); prints the Job."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=sorted(ACTIONS))
        parser.add_argument("name", help="VM name.")
        parser.add_argument("--data-center", help="Data center name, when VM names repeat across data centers.")
        parser.add_argument("--user", default="admin", help="Acting user for the audit log (default admin).")

    def handle(self, *args, action, name, data_center, user, **options):
        vms = VirtualMachine.objects.filter(name=name)
        if data_center:
            vms = vms.filter(data_center__name=data_center)
        matches = list(vms[:2])
        if not matches:
            raise CommandError(f"No VM named {name!r}.")
        if len(matches) > 1:
            raise CommandError(f"Several VMs are named {name!r}; give --data-center.")
        with service_errors():
            job = ACTIONS[action](matches[0], user=acting_user(user))
        self.stdout.write(f"{job.description}: job {job.pk} started.")
