"""`python -m hostagent ...`: the host agent daemon and the engine CA helpers. No Django.

python -m hostagent serve --config /etc/olvm/agent.conf
python -m hostagent make-ca /etc/olvm/pki/ca
python -m hostagent issue-cert --ca-dir /etc/olvm/pki/ca --cn 10.213.0.11 --out /etc/olvm/agent
python -m hostagent issue-cert --ca-dir /etc/olvm/pki/ca --cn olvm-engine --usage client --out /etc/olvm/engine
python -m hostagent cert-info /etc/olvm/agent/cert.pem
python -m hostagent call --address 10.213.0.11 --cert-dir /etc/olvm/engine ping
python -m hostagent simulate --manifest var/sim/manifest.json
python -m hostagent simulate --hosts 1000 --vms-per-host 20
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hostagent", description="OLVM host agent")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the agent daemon")
    serve.add_argument("--config", required=True, help="INI ([agent] section) or JSON config file")
    serve.add_argument("--log-level", help="override the config's log_level")

    make_ca = sub.add_parser("make-ca", help="create the engine CA in a directory")
    make_ca.add_argument("ca_dir")
    make_ca.add_argument("--cn", default="OLVM Engine CA")
    make_ca.add_argument("--days", type=int, default=3650)
    make_ca.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    make_ca.add_argument("--force", action="store_true", help="replace an existing CA (invalidates every certificate)")

    issue = sub.add_parser("issue-cert", help="sign a host (server) or engine (client) certificate")
    issue.add_argument("--ca-dir", required=True)
    issue.add_argument("--cn", required=True, help="common name: the host's address for a server certificate")
    issue.add_argument("--out", required=True, help="directory for cert.pem, key.pem and ca.pem")
    issue.add_argument("--usage", choices=("server", "client", "host"), default="server")
    issue.add_argument("--days", type=int, default=825)
    issue.add_argument("--address", action="append", help="subject alternative name (repeat); default: the CN")
    issue.add_argument("--key-type", choices=("ec", "rsa"), default="ec")

    info = sub.add_parser("cert-info", help="show what a PEM certificate says")
    info.add_argument("path")

    call = sub.add_parser("call", help="call one verb of an agent with the engine's client certificate")
    call.add_argument("--address", required=True)
    call.add_argument("--port", type=int, default=54321)
    call.add_argument("--cert-dir", required=True, help="directory with the client cert.pem, key.pem and ca.pem")
    call.add_argument("--timeout", type=float, default=None)
    call.add_argument("verb")
    call.add_argument("params", nargs="?", default="{}", help="JSON object of parameters")

    simulate = sub.add_parser(
        "simulate",
        help="run many simulated hosts in one process, speaking the real protocol (scale work)",
        description=SIMULATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument("--manifest", help="the manifest the engine wrote (--hosts: where it goes)")
    simulate.add_argument("--hosts", type=int, help="set the engine up first with `manage.py simulate --hosts N`")
    simulate.add_argument("--vms-per-host", type=int, default=20, help="with --hosts (default 20)")
    simulate.add_argument("--cluster", help="with --hosts: the engine cluster of the hosts (manage.py's default)")
    simulate.add_argument("--port-base", type=int, help="with --hosts: the first agent port (manage.py's default)")
    simulate.add_argument("--manage", help="with --hosts: the engine's manage.py (default: the one of this checkout)")
    simulate.add_argument("--send-workers", type=int, default=32, help="threads sending the pushes (default 32)")
    simulate.add_argument(
        "--spread", type=float, help="seconds the first heartbeats are spread over (default: the heartbeat interval)"
    )
    simulate.add_argument("--storage-dir", help="storage root of the simulated hosts (default: next to the manifest)")
    simulate.add_argument("--status-file", help="rewrite this file every second with the simulation's counters (JSON)")
    simulate.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "call":
        return _call(args)
    from hostagent.pki import PkiError, certificate_info, create_ca, issue_certificate

    try:
        if args.command == "make-ca":
            result = create_ca(args.ca_dir, args.cn, days=args.days, key_type=args.key_type, overwrite=args.force)
        elif args.command == "issue-cert":
            result = issue_certificate(
                args.ca_dir, args.cn, args.out, args.days, args.usage, addresses=args.address, key_type=args.key_type
            )
        else:
            result = certificate_info(args.path)
    except PkiError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


def _serve(args) -> int:
    from hostagent.agent.config import ConfigError, load_config
    from hostagent.agent.server import serve

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    logging.basicConfig(
        level=(args.log_level or config.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return serve(config)


SIMULATE_HELP = """\
Run N simulated hosts in this one process. Each has its own sim driver with its VMs
running, its own JSON-RPC server (mutual TLS with its own certificate, on 127.0.0.1) and
its own push to the engine's ingest listener; every answer and every push is labelled
simulated, and so are the hosts in the engine.

The hosts must exist in the engine, with certificates from the engine CA: the engine
writes them, with their VMs and ports, to a manifest (`manage.py simulate --hosts N
--vms-per-host M`, which can also start this process with --run). Two ways to run:

  --manifest FILE          serve the hosts of a manifest the engine wrote;
  --hosts N [--vms-per-host M]
                           run `manage.py simulate --hosts N --vms-per-host M` of this
                           checkout first (its database settings come from the
                           environment, DATABASE_URL...), then serve the manifest it
                           wrote. This needs the engine's checkout; an agent installed
                           on its own uses --manifest.

Stop with SIGTERM or Ctrl-C.
"""


def _simulate(args) -> int:
    import subprocess
    from pathlib import Path

    from hostagent.simulate import run

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.hosts is None and not args.manifest:
        sys.stderr.write("error: give --manifest FILE, or --hosts N to have the engine write one first\n")
        return 2
    manifest = args.manifest
    if args.hosts is not None:
        manage = Path(args.manage) if args.manage else Path(__file__).resolve().parent.parent / "manage.py"
        if not manage.is_file():
            sys.stderr.write(
                f"error: no engine manage.py at {manage}: run `manage.py simulate` on the engine and "
                "pass the manifest it writes with --manifest\n"
            )
            return 2
        command = [sys.executable, str(manage), "simulate", "--hosts", str(args.hosts)]
        command += ["--vms-per-host", str(args.vms_per_host)]
        for option, value in (("--cluster", args.cluster), ("--port-base", args.port_base), ("--manifest", manifest)):
            if value is not None:
                command += [option, str(value)]
        try:
            done = subprocess.run(command, cwd=manage.parent, stdout=subprocess.PIPE, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            sys.stderr.write("error: manage.py simulate did not finish within 30 minutes\n")
            return 1
        sys.stderr.write(done.stdout)
        if done.returncode != 0:
            return done.returncode
        manifest = manifest or _manifest_written(done.stdout)
        if not manifest:
            sys.stderr.write("error: manage.py simulate did not say where it wrote the manifest\n")
            return 2
    return run(
        manifest,
        storage_dir=args.storage_dir,
        send_workers=args.send_workers,
        spread=args.spread,
        status_file=args.status_file,
    )


def _manifest_written(output: str) -> str:
    """The path of `Manifest: PATH` in the output of manage.py simulate."""
    for line in output.splitlines():
        if line.startswith("Manifest: "):
            return line.removeprefix("Manifest: ").strip()
    return ""


def _call(args) -> int:
    import os

    from hostagent.client import AgentError, HostAddress, RemoteAgentClient

    try:
        params = json.loads(args.params)
    except ValueError as exc:
        sys.stderr.write(f"error: params are not JSON: {exc}\n")
        return 2
    host = HostAddress(id=args.address, name=args.address, address=args.address, port=args.port, simulated=False)
    client = RemoteAgentClient(
        host,
        cert_file=os.path.join(args.cert_dir, "cert.pem"),
        key_file=os.path.join(args.cert_dir, "key.pem"),
        ca_file=os.path.join(args.cert_dir, "ca.pem"),
    )
    try:
        result = client.call(args.verb, params, timeout=args.timeout)
    except AgentError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
