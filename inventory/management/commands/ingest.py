"""`manage.py ingest`: the listener host agents push their reports to (docs/ingest.md).

Mutual TLS with the engine CA; the agent's certificate names its host. Listens on
OLVM_INGEST_LISTEN (default 127.0.0.1:54322; add 10.213.0.1:54322 for the lab). The
listener's certificate is issued from the engine CA on start and reloaded when the
renewal task replaces it.
"""

import logging
import os
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from hostagent.ingest_server import IngestServer
from inventory.certs import ingest_listen, ingest_server_cert
from inventory.ingest import handle

log = logging.getLogger("inventory.ingest")

CERT_CHECK_SECONDS = 3600


class Command(BaseCommand):
    help = "Run the ingest listener that host agents push heartbeats, VM events, stats and guest facts to."

    def add_arguments(self, parser):
        parser.add_argument(
            "--listen",
            action="append",
            metavar="ADDR:PORT",
            help="Listen here instead of OLVM_INGEST_LISTEN (repeatable).",
        )
        parser.add_argument("--workers", type=int, default=4, help="Threads applying reports (default 4).")
        parser.add_argument(
            "--max-connections",
            type=int,
            default=1000,
            help="Agent connections kept open at most (default 1000): give at least the number of hosts.",
        )
        parser.add_argument("--reuse-port", action="store_true", help="Share the port with other listener processes.")

    def handle(self, *args, **options):
        listen = ingest_listen()
        if options["listen"]:
            listen = []
            for item in options["listen"]:
                address, _, port = item.rpartition(":")
                if not address or not port.isdigit():
                    raise CommandError(f"--listen wants ADDR:PORT, not {item!r}")
                listen.append((address, int(port)))
        if not listen:
            raise CommandError("Nothing to listen on: set OLVM_INGEST_LISTEN or give --listen.")
        certs = ingest_server_cert()
        server = IngestServer(
            handle,
            listen=listen,
            cert_file=certs.cert_file,
            key_file=certs.key_file,
            ca_file=certs.ca_file,
            executor_workers=options["workers"],
            max_connections=options["max_connections"],
            reuse_port=options["reuse_port"],
        )
        try:
            server.start()
        except OSError as exc:
            raise CommandError(f"Cannot listen on {listen}: {exc}") from None
        where = ", ".join(f"{a}:{p}" for a, p in server.addresses)
        self.stdout.write(f"Ingest listener on {where} (mutual TLS, engine CA; pid {os.getpid()})")
        self.stdout.flush()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(CERT_CHECK_SECONDS):
            try:
                fresh = ingest_server_cert()
                server.reload_certificate(fresh.cert_file, fresh.key_file)
            except Exception as exc:  # keep serving with the certificate it has
                log.warning("could not renew the ingest certificate: %s", exc)
        server.stop()
