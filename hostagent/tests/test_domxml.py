"""Domain XML from a VM spec: everything escaped, nothing injected, and libvirt accepts it."""

import uuid
from xml.etree import ElementTree as ET

import libvirt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hostagent.agent import domxml
from hostagent.agent.errors import InvalidParams
from hostagent.agent.images import ImageStore
from hostagent.agent.verbs import VM_SPEC

NASTY_NAME = "<x>&\"'"
NASTY_DESCRIPTION = (
    "</description><devices><disk type='file' device='disk'><source file='/etc/shadow'/>"
    "<target dev='vdz'/></disk></devices><description>"
    "<![CDATA[ ]]> ]]> <!ENTITY xxe SYSTEM 'file:///etc/passwd'> &xxe; &amp; &lt; <?xml version='1.0'?>"
    '<domain type="kvm"><name>evil</name></domain> <!-- comment --> "quoted" \'single\''
)
ROOT = "/srv/olvm"
STORE = ImageStore([ROOT], state_dir=f"{ROOT}/states")


def make_spec(**overrides):
    sd = {"id": str(uuid.uuid4()), "path": f"{ROOT}/sd1"}
    raw = {
        "id": str(uuid.uuid4()),
        "name": NASTY_NAME,
        "description": NASTY_DESCRIPTION,
        "vcpus": 2,
        "memory_mib": 256,
        "disks": [
            {"id": str(uuid.uuid4()), "storage_domain": sd, "format": "raw", "interface": "virtio"},
            {"id": str(uuid.uuid4()), "storage_domain": sd, "format": "qcow2", "bootable": True},
        ],
        "nics": [{"mac": "56:6F:1A:00:00:01", "model": "virtio", "network": "ovirtmgmt", "linked": True}],
        **overrides,
    }
    return VM_SPEC.clean(raw, "spec")


def build(spec, kvm=False):
    return domxml.build_domain_xml(spec, kvm=kvm, disk_path=STORE.disk_path, graphics_listen="127.0.0.1")


def tags(root):
    return sorted(el.tag for el in root.iter())


def test_a_hostile_name_and_description_stay_text():
    spec = make_spec()

    root = ET.fromstring(build(spec))

    assert root.findtext("name") == NASTY_NAME
    assert root.findtext("title") == NASTY_NAME
    assert root.findtext("description") == NASTY_DESCRIPTION
    assert list(root.find("description")) == []
    assert len(root.findall("devices/disk")) == 2
    assert [d.find("source").get("file") for d in root.findall("devices/disk")] == [
        f"{ROOT}/sd1/images/{spec['disks'][1]['id']}",
        f"{ROOT}/sd1/images/{spec['disks'][0]['id']}",
    ]
    assert root.find(".//domain") is None
    assert "/etc/shadow" not in [s.get("file") for s in root.iter("source")]


def test_the_hostile_spec_builds_exactly_the_elements_of_a_plain_one():
    hostile = ET.fromstring(build(make_spec()))
    plain = ET.fromstring(build(make_spec(name="plain", description="plain words")))

    assert tags(hostile) == tags(plain)


def test_the_spec_round_trips_through_the_metadata():
    spec = make_spec()

    assert domxml.read_spec(ET.fromstring(build(spec))) == spec


def test_libvirt_accepts_the_hostile_domain_and_keeps_its_name_and_description():
    spec = make_spec()
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(build(spec))
        try:
            root = ET.fromstring(dom.XMLDesc(0))
            assert dom.name() == NASTY_NAME
            assert dom.UUIDString() == spec["id"]
            assert root.findtext("description") == NASTY_DESCRIPTION
            assert len(root.findall("devices/disk")) == 2
            assert domxml.read_spec(root) == spec
        finally:
            dom.undefine()
    finally:
        conn.close()


def test_domain_type_is_qemu_unless_kvm_really_works():
    spec = make_spec(name="t")

    assert ET.fromstring(build(spec)).get("type") == "qemu"
    kvm = ET.fromstring(build(spec, kvm=True))
    assert kvm.get("type") == "kvm"
    assert kvm.find("cpu").get("mode") == "host-model"


def test_direct_kernel_boot_when_the_spec_gives_a_kernel():
    root = ET.fromstring(
        build(make_spec(name="k", kernel="/boot/vmlinuz", initrd="/boot/initrd.img", cmdline="console=ttyS0 quiet"))
    )

    assert root.findtext("os/kernel") == "/boot/vmlinuz"
    assert root.findtext("os/initrd") == "/boot/initrd.img"
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert root.find("devices/disk/boot") is None


def test_the_bootable_disk_comes_first_and_boots():
    spec = make_spec(name="b")
    root = ET.fromstring(build(spec))

    first = root.findall("devices/disk")[0]
    assert first.find("alias").get("name") == f"ua-{spec['disks'][1]['id']}"
    assert first.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert first.find("boot").get("order") == "1"
    assert first.find("driver").attrib == {"name": "qemu", "type": "qcow2", "cache": "none"}
    assert root.findall("devices/disk")[1].find("target").get("dev") == "vdb"
    assert root.find("os/boot") is None


def test_scsi_and_sata_disks_get_their_bus_and_a_scsi_controller():
    sd = {"path": f"{ROOT}/sd1"}
    disks = [
        {"id": str(uuid.uuid4()), "storage_domain": sd, "interface": "virtio_scsi"},
        {"id": str(uuid.uuid4()), "storage_domain": sd, "interface": "sata", "read_only": True},
    ]
    root = ET.fromstring(build(make_spec(name="s", disks=disks)))

    assert [d.find("target").attrib for d in root.findall("devices/disk")] == [
        {"dev": "sda", "bus": "scsi"},
        {"dev": "sdb", "bus": "sata"},
    ]
    assert root.find("devices/controller").attrib == {"type": "scsi", "index": "0", "model": "virtio-scsi"}
    assert root.findall("devices/disk")[1].find("readonly") is not None


def test_nics_sit_on_a_bridge_named_after_the_logical_network():
    nics = [
        {"mac": "56:6f:1a:00:00:01", "network": "ovirtmgmt", "model": "e1000", "mtu": 9000},
        {"mac": "56:6f:1a:00:00:02", "interface": "rtl8139", "network": None, "linked": False, "vlan_tag": 10},
    ]
    root = ET.fromstring(build(make_spec(name="n", nics=nics)))
    first, second = root.findall("devices/interface")

    assert first.get("type") == "bridge"
    assert first.find("source").get("bridge") == "ovirtmgmt"
    assert first.find("model").get("type") == "e1000"
    assert first.find("mtu").get("size") == "9000"
    assert first.find("link").get("state") == "up"
    assert second.get("type") == "ethernet" and second.find("source") is None
    assert second.find("model").get("type") == "rtl8139"
    assert second.find("link").get("state") == "down"


def test_guest_agent_channel_binds_without_a_path_and_the_serial_console_is_a_pty():
    root = ET.fromstring(build(make_spec(name="g")))

    channel = root.find("devices/channel")
    assert channel.get("type") == "unix"
    assert channel.find("source").attrib == {"mode": "bind"}
    assert channel.find("target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}
    assert root.find("devices/serial").get("type") == "pty"
    assert root.find("devices/console").get("type") == "pty"


@pytest.mark.parametrize(
    ("console_type", "graphics"), [("vnc", "vnc"), ("spice", "spice"), ("serial", None), ("headless", None)]
)
def test_graphics_only_when_the_console_type_asks_for_them(console_type, graphics):
    root = ET.fromstring(build(make_spec(name="v", console_type=console_type)))

    found = root.find("devices/graphics")
    assert (found.get("type") if found is not None else None) == graphics
    if graphics:
        assert found.get("listen") == "127.0.0.1"


def test_memory_and_vcpu_headroom_for_balloon_and_hotplug():
    root = ET.fromstring(build(make_spec(name="m", vcpus=2, max_vcpus=8, memory_mib=512, max_memory_mib=2048)))

    assert (root.findtext("memory"), root.find("memory").get("unit")) == ("2048", "MiB")
    assert root.findtext("currentMemory") == "512"
    assert root.findtext("vcpu") == "8" and root.find("vcpu").get("current") == "2"


@pytest.mark.parametrize(("machine", "spare_ports"), [("q35", 8), ("pc-q35-7.2", 8), ("pc", 0), (None, 0)])
def test_q35_machines_get_spare_root_ports_for_hotplug(machine, spare_ports):
    root = ET.fromstring(build(make_spec(name="q", machine=machine)))

    ports = root.findall("devices/controller[@model='pcie-root-port']")
    assert len(ports) == spare_ports
    assert (root.find("os/type").get("machine")) == machine


def test_snapshot_xml_escapes_its_description():
    xml = domxml.snapshot_xml({"id": "1b0f0a4e-8d62-4c8d-a1d6-6f0b9f1f3a11", "description": NASTY_DESCRIPTION})

    root = ET.fromstring(xml)
    assert root.findtext("description") == NASTY_DESCRIPTION
    assert tags(root) == ["description", "domainsnapshot", "name"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "a/b", "spec.name: must not contain '/'"),
        ("name", "bell\x07", "spec.name: contains the control character U+0007"),
        ("description", "nul\x00", "spec.description: contains the control character U+0000"),
        ("description", "\ud800", "spec.description: contains the control character U+D800"),
        ("name", "", "spec.name: must not be empty"),
    ],
)
def test_strings_xml_cannot_carry_are_refused_before_any_xml_is_built(field, value, message):
    with pytest.raises(InvalidParams) as caught:
        make_spec(**{field: value})

    assert str(caught.value) == message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(min_size=1, max_size=80), description=st.text(max_size=300))
@example(name="crlf", description="line 1\r\nline 2\r")  # a carriage return must survive, not turn into \n
def test_any_name_and_description_that_validate_round_trip(name, description):
    try:
        spec = make_spec(name=name, description=description)
    except InvalidParams:
        return
    root = ET.fromstring(build(spec))

    assert root.findtext("name") == name
    assert (root.findtext("description") or "") == description
    assert len(root.findall("devices/disk")) == 2 and len(root.findall("devices/interface")) == 1
