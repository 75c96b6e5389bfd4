"""`python -m hostagent ...`: the host agent daemon and the engine CA helpers. No Django.

python -m hostagent serve --config /etc/olvm/agent.conf
python -m hostagent make-ca /etc/olvm/pki/ca
python -m hostagent issue-cert --ca-dir /etc/olvm/pki/ca --cn 10.213.0.11 --out /etc/olvm/agent
python -m hostagent issue-cert --ca-dir /etc/olvm/pki/ca --cn olvm-engine --usage client --out /etc/olvm/engine
python -m hostagent cert-info /etc/olvm/agent/cert.pem
python -m hostagent call --address 10.213.0.11 --cert-dir /etc/olvm/engine ping
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

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
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
