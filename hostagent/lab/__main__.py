"""`python -m hostagent.lab up --hosts N | down | status | fail HOST net|power | heal HOST`.

Expected failures (not root, qemu not installed, an unknown host) print one line on
stderr and exit 2; there is no traceback for them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from hostagent.lab import core

COLUMNS = ("name", "state", "ip", "libvirt_uri", "reachable", "virtlogd", "libvirtd", "agent", "domains")


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"lab: {text}\n")


def _pid_cell(row: dict, key: str) -> str:
    running = row["running"][key]
    if running is None:
        return "-"
    pid = row["pids"].get(key)
    return f"{pid}" if running else f"dead({pid})" if pid else "stopped"


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no lab hosts (run: python -m hostagent.lab up --hosts N)"
    cells = [COLUMNS]
    for row in rows:
        cells.append(
            (
                row["name"],
                row["state"],
                row["ip"],
                row["libvirt_uri"],
                "yes" if row["reachable"] else "no",
                _pid_cell(row, "virtlogd"),
                _pid_cell(row, "libvirtd"),
                _pid_cell(row, "agent"),
                str(row["domains"]),
            )
        )
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _agent_command(template: str | None):
    """--agent-cmd 'TEMPLATE': shell words with {name} {ip} {uri} {engine_ip} {shared_dir}
    {state_dir} filled in per host."""
    if not template:
        return None

    def command(host: core.LabHost) -> list[str]:
        fields = {
            "name": host.name,
            "ip": host.ip,
            "uri": host.libvirt_uri,
            "engine_ip": core.BRIDGE_IP,
            "shared_dir": str(host.shared_dir),
            "state_dir": str(host.host_dir.parent.parent),
        }
        return [word.format(**fields) for word in shlex.split(template)]

    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hostagent.lab",
        description="Lab hosts on this machine: network namespaces with their own libvirtd (needs root).",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=core.DEFAULT_STATE_DIR, help="lab state (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_up = sub.add_parser("up", help="make N hosts run (idempotent)")
    p_up.add_argument("--hosts", type=int, default=2, help="number of hosts (default: %(default)s)")
    p_up.add_argument(
        "--agent-cmd",
        metavar="TEMPLATE",
        help="start this command in every host, e.g. '.venv/bin/python -m hostagent.agent --listen {ip}' "
        "({name} {ip} {uri} {engine_ip} {shared_dir} {state_dir} are filled in)",
    )
    p_up.add_argument("--json", action="store_true", help="print the status as JSON")
    sub.add_parser("down", help="stop everything and remove the hosts (keeps the shared dir)")
    p_status = sub.add_parser("status", help="show the hosts")
    p_status.add_argument("--json", action="store_true", help="print the status as JSON")
    p_fail = sub.add_parser("fail", help="simulate a failure: net (link down) or power (kill everything)")
    p_fail.add_argument("host", help="h1, h2, ...")
    p_fail.add_argument("mode", choices=core.FAIL_MODES)
    p_heal = sub.add_parser("heal", help="undo a failure: link up, daemons and agent started again")
    p_heal.add_argument("host", help="h1, h2, ...")
    return parser


def _print_status(state_dir: Path, as_json: bool) -> None:
    rows = core.status(state_dir)
    if as_json:
        _out(json.dumps({"lab": core.lab_info(state_dir), "hosts": rows}, indent=2, default=str))
        return
    _out(format_table(rows))
    info = core.lab_info(state_dir)
    if rows:
        kvm = info.get("kvm") or {}
        kvm_text = ("yes" if kvm.get("works") else "no") + (f": {kvm['reason']}" if kvm.get("reason") else "")
        _out(f"engine side: {core.BRIDGE} {core.BRIDGE_IP}  shared dir: {info.get('shared_dir')}")
        _out(f"guest images: {info.get('images_dir')}  KVM usable: {kvm_text if kvm else 'not probed'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            start = time.monotonic()
            hosts = core.up(args.hosts, args.state_dir, agent_command=_agent_command(args.agent_cmd))
            if not args.json:
                _out(f"lab up: {len(hosts)} host(s) in {time.monotonic() - start:.1f} s")
            _print_status(args.state_dir, args.json)
        elif args.command == "down":
            removed = core.down(args.state_dir)
            _out(f"lab down: removed {', '.join(removed) if removed else 'nothing (no hosts)'}")
        elif args.command == "status":
            _print_status(args.state_dir, args.json)
        elif args.command == "fail":
            core.fail(args.host, args.mode, args.state_dir)
            _out(f"{args.host}: {args.mode} failure simulated")
            _print_status(args.state_dir, False)
        elif args.command == "heal":
            core.heal(args.host, args.state_dir)
            _out(f"{args.host}: healed")
            _print_status(args.state_dir, False)
    except core.LabError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
