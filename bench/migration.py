"""Bench: live migration of the tiny lab guest through the host agent, h1 -> h2 -> h1 ...

Each host gets an agent in this process (the real JSON-RPC server over mutual TLS and the
libvirt driver on that host's libvirtd over qemu+tcp); the guest (128 MiB, TCG) boots on
h1 from an overlay on the lab's shared dir and is migrated peer-to-peer with `migrate_vm`
(policy minimal_downtime, unsafe: the shared dir stands in for shared storage), polling
`migration_status` every 50 ms until it ends. Per run and as p50:

- wall: the `migrate_vm` call to the status read that says completed;
- job: the migration job's time as libvirt reports it (the destination's completed job);
- downtime: how long the guest was paused, as libvirt reports it (same source).

The guest's /proc/uptime (through its guest agent) must grow across every move: no reboot.
Needs root (the lab: two hosts in network namespaces; an existing lab is reused, and taken
down again only when this bench brought it up).

    .venv/bin/python bench/migration.py [--runs 3]
"""

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _setup import ROOT, percentile

sys.path.insert(0, str(ROOT))

POLL = 0.05  # seconds between status reads


def wait_guest_agent(dom, timeout: float = 90) -> None:
    import libvirt

    from hostagent.lab import core

    deadline = time.monotonic() + timeout
    while True:
        try:
            core.guest_command(dom, "guest-ping")
            return
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise SystemExit("the guest agent did not answer") from None
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import libvirt

    from hostagent.agent.testing import agent_config, make_pki, remote_client, running_agent
    from hostagent.lab import core

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    brought_up = not core._namespaces()
    print("lab up (2 hosts) ...", flush=True)
    hosts = core.up(2, core.DEFAULT_STATE_DIR, probe_kvm=False)
    conns = {h.name: libvirt.open(h.libvirt_uri) for h in hosts}
    disk = hosts[0].shared_dir / f"bench-migration-{uuid.uuid4().hex[:8]}.qcow2"
    dom = None
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pki = make_pki(tmp)
        agents = {}
        for h in hosts:
            config = agent_config(
                pki, driver="libvirt", libvirt_uri=h.libvirt_uri, storage_roots=[str(h.shared_dir)], host_name=h.name
            )
            agents[h.name] = remote_client(stack.enter_context(running_agent(config)), pki)
        try:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
                + ["-b", str(core.IMAGES_DIR / "tiny-disk.qcow2"), str(disk)],
                check=True,
                timeout=30,
            )
            dom = conns["h1"].defineXML(core.tiny_guest_xml("bench-migration", disk=disk, vm_uuid=str(uuid.uuid4())))
            dom.create()
            wait_guest_agent(dom)
            vm_id = dom.UUIDString()
            print(f"tiny guest {vm_id} up on h1; migrating {args.runs} times", flush=True)
            walls, jobs, downtimes = [], [], []
            where = hosts[0]
            for run in range(1, args.runs + 1):
                target = hosts[1] if where is hosts[0] else hosts[0]
                before = core.guest_uptime(dom)
                start = time.monotonic()
                agents[where.name].migrate_vm(vm_id, target.libvirt_uri, unsafe=True)
                while (status := agents[where.name].migration_status(vm_id))["state"] == "running":
                    time.sleep(POLL)
                wall = (time.monotonic() - start) * 1000
                if status["state"] != "completed":
                    raise SystemExit(f"run {run}: the migration ended {status['state']}: {status.get('error')}")
                dom = conns[target.name].lookupByUUIDString(vm_id)
                after = core.guest_uptime(dom)
                if after <= before:
                    raise SystemExit(f"run {run}: the guest rebooted (uptime {before} -> {after})")
                walls.append(wall)
                jobs.append(status["job_time_ms"])
                downtimes.append(status["downtime_ms"])
                print(
                    f"run {run} {where.name}->{target.name}: wall {wall:.0f} ms, job {status['job_time_ms']} ms, "
                    f"downtime {status['downtime_ms']} ms (max downtime {status['max_downtime_ms']} ms), "
                    f"guest uptime {before:.1f} -> {after:.1f} s",
                    flush=True,
                )
                where = target
            print(
                f"p50: wall {percentile(walls, 50):.0f} ms, job {percentile(jobs, 50):.0f} ms, "
                f"downtime {percentile(downtimes, 50):.0f} ms (n={len(walls)})"
            )
        finally:
            for conn in conns.values():
                for d in conn.listAllDomains(0):
                    if d.name() == "bench-migration":
                        with contextlib.suppress(libvirt.libvirtError):
                            d.destroy()
                        with contextlib.suppress(libvirt.libvirtError):
                            d.undefine()
                conn.close()
            disk.unlink(missing_ok=True)
    if brought_up:
        print("lab down ...", flush=True)
        core.down(core.DEFAULT_STATE_DIR)


if __name__ == "__main__":
    main()
