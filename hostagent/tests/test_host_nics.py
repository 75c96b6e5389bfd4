"""The host's NIC byte counters in host_stats: read from /proc/net/dev by the libvirt driver,
made up (growing) by the sim driver."""

from hostagent.agent.config import config_from_dict
from hostagent.agent.drivers import libvirt_driver
from hostagent.agent.drivers.libvirt_driver import LibvirtDriver, nic_counters
from hostagent.agent.drivers.sim_driver import SimDriver

PROC_NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier
  lo:  123456  100  0  0  0  0  0  0  123456  100  0  0  0  0  0  0
  eth0: 9876543  7000  0  3  0  0  0  12  1234567  5000  0  0  0  0  0  0
ovirtmgmt:  4000  40  0  0  0  0  0  0  2000  20  0  0  0  0  0  0
 vnet0:  500  5  0  0  0  0  0  0  700  7  0  0  0  0  0  0
macvtap3:  500  5  0  0  0  0  0  0  700  7  0  0  0  0  0  0
 vnetx:  10  1  0  0  0  0  0  0  20  2  0  0  0  0  0  0
  eth1:18446744073709551615 1 0 0 0 0 0 0 42 1 0 0 0 0 0 0
 short: 1 2 3
"""


def write_proc(tmp_path, text=PROC_NET_DEV):
    proc = tmp_path / "net_dev"
    proc.write_text(text)
    sys_net = tmp_path / "sys_class_net"
    (sys_net / "ovirtmgmt" / "bridge").mkdir(parents=True)
    (sys_net / "eth0").mkdir()
    return str(proc), str(sys_net)


def test_nic_counters_are_every_interface_but_the_loopback_and_the_vms_taps(tmp_path):
    proc, sys_net = write_proc(tmp_path)

    nics = nic_counters(proc, sys_net)

    assert nics == [
        {"name": "eth0", "rx_bytes": 9876543, "tx_bytes": 1234567, "bridge": False},
        {"name": "eth1", "rx_bytes": 18446744073709551615, "tx_bytes": 42, "bridge": False},
        {"name": "ovirtmgmt", "rx_bytes": 4000, "tx_bytes": 2000, "bridge": True},
        {"name": "vnetx", "rx_bytes": 10, "tx_bytes": 20, "bridge": False},
    ]


def test_nic_counters_of_an_unreadable_file_are_none_and_a_garbled_line_is_skipped(tmp_path):
    proc, sys_net = write_proc(tmp_path, "  eth0: x 1 2 3 4 5 6 7 8\n  eth2: 5 0 0 0 0 0 0 0 6 0 0 0 0 0 0 0\n")

    assert nic_counters(str(tmp_path / "missing"), sys_net) is None
    assert nic_counters(proc, sys_net) == [{"name": "eth2", "rx_bytes": 5, "tx_bytes": 6, "bridge": False}]


def test_libvirt_host_stats_carry_the_counters_only_when_the_host_is_this_machine(tmp_path, monkeypatch):
    proc, sys_net = write_proc(tmp_path)
    monkeypatch.setattr(libvirt_driver, "PROC_NET_DEV", proc)
    monkeypatch.setattr(libvirt_driver, "SYS_CLASS_NET", sys_net)
    driver = LibvirtDriver(config_from_dict({"driver": "libvirt", "libvirt_uri": "test:///default"}))
    try:
        remote = driver.host_stats()
        driver.local = True  # as with qemu:///system
        local = driver.host_stats()
    finally:
        driver.close()

    assert "nics" not in remote
    assert [nic["name"] for nic in local["nics"]] == ["eth0", "eth1", "ovirtmgmt", "vnetx"]


def test_sim_host_counters_grow_with_time_and_running_vms():
    driver = SimDriver(config_from_dict({"driver": "sim", "host_name": "sim-h1"}))
    [nic] = driver.host_stats()["nics"]
    start = driver._net[0]

    idle = driver._count_traffic(start + 10, running=0)
    busy = driver._count_traffic(start + 20, running=1)
    same = driver._count_traffic(start + 20, running=1)  # no time passed: no traffic

    assert (nic["name"], nic["bridge"]) == ("eth0", False) and nic["rx_bytes"] > 0 and nic["tx_bytes"] > 0
    idle_rx, idle_tx = idle[0] - nic["rx_bytes"], idle[1] - nic["tx_bytes"]
    busy_rx = busy[0] - idle[0]
    # 3-5 KiB/s received and 1-2 KiB/s sent by the host itself, 24 KiB/s more received per VM, +-20 %.
    assert 10 * 3072 * 0.8 <= idle_rx <= 10 * 5120 * 1.2 and 10 * 1024 * 0.8 <= idle_tx <= 10 * 2048 * 1.2
    assert busy_rx >= 10 * 0.8 * 24576
    assert same == busy
