"""`manage.py lab up --hosts N | down | status | fail HOST net|power | heal HOST`.

The lab tool (`hostagent.lab.core`, needs root) plus the engine's side of it: `up` brings
the lab hosts up, then registers the lab in the engine (`inventory.lab.register_lab`:
data center and cluster Lab, storage domain lab-shared, template tiny, one host per
lab host) and runs the queued Jobs (host deploy) in this process. Idempotent: a second
`up` changes nothing in the engine. `down` stops the lab; its hosts stay in the inventory
and go non-responsive.
"""

import ipaddress
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

from hostagent.lab import core
from hostagent.lab.__main__ import format_table
from inventory.lab import LabImageError, guest_image_files, register_lab
from inventory.models import Host, Job
from olvm_site.celery import tasks_inline

from ._util import acting_user, service_errors, table


class Command(BaseCommand):
    help = "Lab hosts on this machine (network namespaces with their own libvirtd; needs root), known to the engine."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        up = sub.add_parser("up", help="Make N lab hosts run and register the lab in the engine (idempotent).")
        up.add_argument("--hosts", type=int, default=2, help="Number of lab hosts (default 2).")
        up.add_argument("--user", default="admin", help="Acting user for the audit log (default admin).")
        sub.add_parser("down", help="Stop the lab (its hosts stay in the engine and go non-responsive).")
        sub.add_parser("status", help="The lab hosts and their status in the engine.")
        fail = sub.add_parser("fail", help="Simulate a failure of a lab host: net (link down) or power (all killed).")
        fail.add_argument("host", help="h1, h2, ...")
        fail.add_argument("mode", choices=core.FAIL_MODES)
        heal = sub.add_parser("heal", help="Undo a failure: link up, daemons started again.")
        heal.add_argument("host", help="h1, h2, ...")

    def handle(self, *args, action, **options):
        # Where host deploy (inventory.deploy) looks for lab hosts too.
        state_dir = Path(getattr(settings, "OLVM_LAB_STATE_DIR", "") or core.DEFAULT_STATE_DIR)
        try:
            if action == "up":
                self.up(state_dir, options["hosts"], options["user"])
            elif action == "down":
                removed = core.down(state_dir)
                self.log(f"lab down: removed {', '.join(removed) if removed else 'nothing (no lab hosts)'}")
                self.engine_hosts(state_dir, note="they stay in the engine and go non-responsive")
            elif action == "status":
                self.status(state_dir)
            elif action == "fail":
                core.fail(options["host"], options["mode"], state_dir)
                self.log(f"{options['host']}: {options['mode']} failure simulated")
                self.status(state_dir)
            elif action == "heal":
                core.heal(options["host"], state_dir)
                self.log(f"{options['host']}: healed")
                self.status(state_dir)
        except core.LabError as exc:
            raise CommandError(f"lab: {exc}") from None

    def log(self, text: str = "") -> None:
        self.stdout.write(text)

    # up ----------------------------------------------------------------------------------

    def up(self, state_dir: Path, count: int, username: str) -> None:
        core.check_environment()
        check_database()
        user = acting_user(username) if username else None
        try:
            guest_image_files(core.IMAGES_DIR)
        except LabImageError as exc:
            raise CommandError(f"lab: {exc}") from None
        start = time.monotonic()
        lab_hosts = core.up(count, state_dir)
        self.log(f"lab up: {len(lab_hosts)} host(s) in {time.monotonic() - start:.1f} s")
        rows = core.status(state_dir)
        self.log(format_table(rows))
        try:
            with service_errors(), tasks_inline():
                registration = register_lab(core.lab_info(state_dir), rows, user=user)
        except LabImageError as exc:
            raise CommandError(f"lab: {exc}") from None
        self.log("")
        if registration.changes:
            self.log("engine:")
            for change in registration.changes:
                self.log(f"  {change}")
        else:
            self.log("engine: nothing to change (the lab is registered already)")
        self.log("")
        report = []
        for host, job in registration.hosts:
            host.refresh_from_db()
            report.append((host.name, host.address, host.status, host.status_detail, job_outcome(job)))
        self.log(table(report, ("HOST", "ADDRESS", "STATUS", "DETAIL", "JOB")))
        sd, template = registration.storage_domain, registration.template
        self.log(f"storage domain {sd.name}: {sd.path}; template {template.name}: disk {registration.disk.alias}")

    # status --------------------------------------------------------------------------------

    def status(self, state_dir: Path) -> None:
        rows = core.status(state_dir)
        if rows:
            self.log(format_table(rows))
            info = core.lab_info(state_dir)
            self.log(f"engine side: {core.BRIDGE} {core.BRIDGE_IP}  shared dir: {info.get('shared_dir')}")
        else:
            self.log("no lab hosts (run: manage.py lab up --hosts N, or make lab)")
        self.engine_hosts(state_dir)

    def engine_hosts(self, state_dir: Path, note: str = "") -> None:
        """The engine's hosts at lab addresses, with their status there."""
        try:
            hosts = [h for h in Host.objects.select_related("cluster").order_by("name") if _in_lab_subnet(h.address)]
        except DatabaseError as exc:
            self.log(f"engine: the database cannot be read ({exc})".strip())
            return
        if not hosts:
            self.log("engine: no host at a lab address (manage.py lab up adds them)")
            return
        self.log("")
        self.log("engine hosts" + (f" ({note})" if note else "") + ":")
        rows = [(h.name, h.address, h.cluster.name, h.status, h.status_detail) for h in hosts]
        self.log(table(rows, ("HOST", "ADDRESS", "CLUSTER", "STATUS", "DETAIL")))


def _in_lab_subnet(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in core.SUBNET
    except ValueError:
        return False


def job_outcome(job: Job | None) -> str:
    if job is None:
        return "(in the engine already)"
    job.refresh_from_db()
    text = f"{job.action_type} {job.status}"
    if job.error:
        text += f": {job.error}"
    return text


def check_database() -> None:
    """Refuse before touching the machine when the engine's database is not there or not migrated."""
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        raise CommandError(f"lab: cannot reach the engine database: {exc}".strip()) from None
    if pending:
        raise CommandError(
            f"lab: the engine database lacks {len(pending)} migration(s): run `manage.py migrate` (or `make run`) first"
        )
