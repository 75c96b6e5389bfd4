import pytest
from django.core.exceptions import ValidationError

from inventory.exceptions import ConflictError
from inventory.models import Event
from networking import services
from networking.models import ClusterNetwork, LogicalNetwork, VnicProfile
from tests.factories import make_cluster, make_data_center, make_vm

pytestmark = pytest.mark.django_db


def network_on(cluster, name="blue", **kw):
    """A VM network attached to `cluster`, with its default profile."""
    network = services.create_network(user=None, data_center=cluster.data_center, name=name, clusters=[cluster], **kw)
    return network, network.vnic_profiles.get()


# Management network -----------------------------------------------------------------------


def test_a_new_data_center_has_the_management_network_and_its_profile():
    dc = make_data_center()

    network = LogicalNetwork.objects.get(data_center=dc)
    assert (network.name, network.is_management, network.vm_network, network.required) == (
        "ovirtmgmt",
        True,
        True,
        True,
    )
    assert list(network.vnic_profiles.values_list("name", flat=True)) == ["ovirtmgmt"]


def test_a_new_cluster_has_the_management_network_attached():
    cluster = make_cluster()

    attachment = ClusterNetwork.objects.get(cluster=cluster)
    assert attachment.network.is_management
    assert attachment.required


# create_network ---------------------------------------------------------------------------


def test_create_network_adds_its_default_profile_attaches_clusters_and_records_event(admin_user):
    # given
    dc = make_data_center(name="dc-a")
    c1, c2 = make_cluster(dc, name="c1"), make_cluster(dc, name="c2")

    # when
    network = services.create_network(
        user=admin_user, data_center=dc, name="blue", vlan_tag=10, mtu=9000, required=False, clusters=[c2, c1]
    )

    # then
    assert (network.vlan_tag, network.mtu, network.vm_network, network.is_management) == (10, 9000, True, False)
    assert list(network.vnic_profiles.values_list("name", flat=True)) == ["blue"]
    attachments = ClusterNetwork.objects.filter(network=network).order_by("cluster__name")
    assert [(a.cluster.name, a.required) for a in attachments] == [("c1", False), ("c2", False)]
    event = Event.objects.get(code="USER_ADD_NETWORK")
    assert event.message == "Network blue was added to data center dc-a and attached to cluster(s) c1, c2 by admin."
    assert event.data_center_id == dc.pk


def test_create_non_vm_network_has_no_vnic_profile():
    network = services.create_network(user=None, data_center=make_data_center(), name="storage", vm_network=False)

    assert not network.vnic_profiles.exists()


def test_create_network_refuses_a_name_already_used_in_the_data_center():
    dc = make_data_center()
    services.create_network(user=None, data_center=dc, name="blue")

    with pytest.raises(ValidationError) as exc:
        services.create_network(user=None, data_center=dc, name="blue")

    assert exc.value.message_dict == {"name": ["The data center already has a network named blue."]}


def test_create_network_allows_the_same_name_and_vlan_in_another_data_center():
    services.create_network(user=None, data_center=make_data_center(), name="blue", vlan_tag=10)

    network = services.create_network(user=None, data_center=make_data_center(), name="blue", vlan_tag=10)

    assert network.pk


def test_create_network_refuses_a_vlan_tag_already_used_in_the_data_center():
    dc = make_data_center()
    services.create_network(user=None, data_center=dc, name="blue", vlan_tag=10)

    with pytest.raises(ValidationError) as exc:
        services.create_network(user=None, data_center=dc, name="red", vlan_tag=10)

    assert exc.value.message_dict == {"vlan_tag": ["VLAN 10 is already used by network blue of the data center."]}


def test_create_network_refuses_a_management_name_clash():
    dc = make_data_center()

    with pytest.raises(ValidationError) as exc:
        services.create_network(user=None, data_center=dc, name="ovirtmgmt")

    assert "name" in exc.value.message_dict


def test_create_network_refuses_clusters_of_another_data_center():
    dc = make_data_center()
    foreign = make_cluster(name="far")

    with pytest.raises(ValidationError) as exc:
        services.create_network(user=None, data_center=dc, name="blue", clusters=[foreign])

    assert exc.value.message_dict == {"clusters": [f"Cluster(s) far are not in data center {dc.name}."]}
    assert not LogicalNetwork.objects.filter(name="blue").exists()


def test_create_network_refuses_a_bad_mtu():
    with pytest.raises(ValidationError) as exc:
        services.create_network(user=None, data_center=make_data_center(), name="blue", mtu=50)

    assert exc.value.message_dict == {"mtu": ["MTU must be 0 (default) or from 68 to 9000."]}


# update_network ---------------------------------------------------------------------------


def test_update_network_changes_fields_and_records_event():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue")

    services.update_network(network, user=None, vlan_tag=20, description="VM traffic")

    network.refresh_from_db()
    assert (network.vlan_tag, network.description) == (20, "VM traffic")
    assert (
        Event.objects.get(code="USER_UPDATE_NETWORK").message
        == "Network blue was updated (vlan_tag, description) by the system."
    )


def test_update_network_refuses_to_take_the_management_role_away():
    management = LogicalNetwork.objects.get(data_center=make_data_center(), is_management=True)

    with pytest.raises(ConflictError, match="management network; it cannot lose that role"):
        services.update_network(management, user=None, is_management=False)


def test_update_network_refuses_a_second_management_network():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue")

    with pytest.raises(ValidationError) as exc:
        services.update_network(network, user=None, is_management=True)

    assert exc.value.message_dict == {
        "is_management": ["Data center already has a management network (ovirtmgmt); only one is allowed."]
    }


def test_update_network_refuses_a_vlan_tag_of_another_network():
    dc = make_data_center()
    services.create_network(user=None, data_center=dc, name="blue", vlan_tag=10)
    red = services.create_network(user=None, data_center=dc, name="red", vlan_tag=11)

    with pytest.raises(ValidationError) as exc:
        services.update_network(red, user=None, vlan_tag=10)

    assert exc.value.message_dict == {"vlan_tag": ["VLAN 10 is already used by network blue of the data center."]}


def test_update_network_refuses_vlan_change_while_a_running_vm_uses_it():
    cluster = make_cluster()
    network, profile = network_on(cluster)
    vm = make_vm(cluster, status="up", name="web")
    services.create_nic(vm, user=None, profile=profile, plugged=False)

    with pytest.raises(ConflictError, match="used by running VM\\(s\\) web; vlan_tag cannot change"):
        services.update_network(network, user=None, vlan_tag=30)


def test_update_network_to_non_vm_removes_its_unused_profiles():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue")

    services.update_network(network, user=None, vm_network=False)

    assert not VnicProfile.objects.filter(network=network).exists()


def test_update_network_to_non_vm_refused_while_nics_use_it():
    cluster = make_cluster()
    network, profile = network_on(cluster)
    services.create_nic(make_vm(cluster, name="web"), user=None, profile=profile)

    with pytest.raises(ConflictError, match="carries NIC\\(s\\) web/nic1; it must stay a VM network"):
        services.update_network(network, user=None, vm_network=False)


def test_update_network_to_vm_network_adds_the_default_profile():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue", vm_network=False)

    services.update_network(network, user=None, vm_network=True)

    assert list(network.vnic_profiles.values_list("name", flat=True)) == ["blue"]


def test_update_network_refuses_unknown_fields():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue")

    with pytest.raises(ValidationError) as exc:
        services.update_network(network, user=None, data_center=make_data_center())

    assert list(exc.value.message_dict) == ["data_center"]


# remove_network ---------------------------------------------------------------------------


def test_remove_network_refused_for_the_management_network():
    management = LogicalNetwork.objects.get(data_center=make_data_center(), is_management=True)

    with pytest.raises(ConflictError, match="is the management network"):
        services.remove_network(management, user=None)


def test_remove_network_refused_while_a_nic_uses_one_of_its_profiles():
    cluster = make_cluster()
    network, profile = network_on(cluster)
    services.create_nic(make_vm(cluster, name="web"), user=None, profile=profile)

    with pytest.raises(ConflictError, match="used by NIC\\(s\\) web/nic1"):
        services.remove_network(network, user=None)
    assert LogicalNetwork.objects.filter(pk=network.pk).exists()


def test_remove_network_removes_its_profiles_and_cluster_attachments(admin_user):
    cluster = make_cluster()
    network, profile = network_on(cluster)

    services.remove_network(network, user=admin_user)

    assert not LogicalNetwork.objects.filter(pk=network.pk).exists()
    assert not VnicProfile.objects.filter(pk=profile.pk).exists()
    assert not ClusterNetwork.objects.filter(network_id=network.pk).exists()
    assert Event.objects.get(code="USER_REMOVE_NETWORK").message == "Network blue was removed by admin."


# Networks on clusters ---------------------------------------------------------------------


def test_attach_network_to_cluster_and_record_event():
    dc = make_data_center()
    cluster = make_cluster(dc, name="c1")
    network = services.create_network(user=None, data_center=dc, name="blue")

    attachment = services.attach_network_to_cluster(network, cluster, user=None, required=False)

    assert (attachment.cluster, attachment.network, attachment.required) == (cluster, network, False)
    event = Event.objects.get(code="NETWORK_ATTACH_NETWORK_TO_CLUSTER")
    assert event.message == "Network blue was attached to cluster c1 by the system."
    assert event.cluster_id == cluster.pk


def test_attach_network_to_a_cluster_of_another_data_center_is_refused():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue")

    with pytest.raises(ValidationError) as exc:
        services.attach_network_to_cluster(network, make_cluster(name="far"), user=None)

    assert exc.value.message_dict == {"cluster": ["Cluster far is not in the data center of network blue."]}


def test_attach_network_twice_is_refused():
    cluster = make_cluster(name="c1")
    network, _ = network_on(cluster)

    with pytest.raises(ConflictError, match="already attached to cluster c1"):
        services.attach_network_to_cluster(network, cluster, user=None)


def test_detach_the_management_network_is_refused():
    cluster = make_cluster()

    with pytest.raises(ConflictError, match="management network"):
        services.detach_network_from_cluster(ClusterNetwork.objects.get(cluster=cluster), user=None)


def test_detach_network_refused_while_vms_of_the_cluster_have_nics_on_it():
    cluster = make_cluster(name="c1")
    network, profile = network_on(cluster)
    services.create_nic(make_vm(cluster, name="web"), user=None, profile=profile)

    with pytest.raises(ConflictError, match="used in cluster c1 by NIC\\(s\\) web/nic1"):
        services.detach_network_from_cluster(ClusterNetwork.objects.get(network=network), user=None)


def test_detach_network_allowed_when_only_other_clusters_use_it():
    # given the network on two clusters, a NIC on it only in c2
    dc = make_data_center()
    c1, c2 = make_cluster(dc, name="c1"), make_cluster(dc, name="c2")
    network = services.create_network(user=None, data_center=dc, name="blue", clusters=[c1, c2])
    services.create_nic(make_vm(c2), user=None, profile=network.vnic_profiles.get())

    # when
    services.detach_network_from_cluster(ClusterNetwork.objects.get(network=network, cluster=c1), user=None)

    # then
    assert list(ClusterNetwork.objects.filter(network=network).values_list("cluster__name", flat=True)) == ["c2"]
    assert (
        Event.objects.get(code="NETWORK_DETACH_NETWORK_FROM_CLUSTER").message
        == "Network blue was detached from cluster c1 by the system."
    )


# vNIC profiles ----------------------------------------------------------------------------


def test_create_vnic_profile_and_record_event():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue")

    profile = services.create_vnic_profile(user=None, network=network, name="mirror", port_mirroring=True)

    assert (profile.network, profile.port_mirroring, profile.pass_through) == (network, True, False)
    assert (
        Event.objects.get(code="ADD_VNIC_PROFILE").message
        == "vNIC profile mirror was added to network blue by the system."
    )


def test_create_vnic_profile_needs_a_vm_network():
    network = services.create_network(user=None, data_center=make_data_center(), name="storage", vm_network=False)

    with pytest.raises(ValidationError) as exc:
        services.create_vnic_profile(user=None, network=network, name="p")

    assert exc.value.message_dict == {"network": ["vNIC profiles need a VM network."]}


def test_create_vnic_profile_refuses_a_name_used_on_the_network():
    network = services.create_network(user=None, data_center=make_data_center(), name="blue")

    with pytest.raises(ValidationError) as exc:
        services.create_vnic_profile(user=None, network=network, name="blue")

    assert exc.value.message_dict == {"name": ["Network blue already has a vNIC profile blue."]}


def test_update_vnic_profile_refuses_pass_through_change_while_running_vms_use_it():
    cluster = make_cluster()
    _, profile = network_on(cluster)
    services.create_nic(make_vm(cluster, status="up", name="web"), user=None, profile=profile, plugged=False)

    with pytest.raises(ConflictError, match="used by running VM\\(s\\) web"):
        services.update_vnic_profile(profile, user=None, pass_through=True)


def test_update_vnic_profile_changes_fields_when_no_running_vm_uses_it():
    cluster = make_cluster()
    _, profile = network_on(cluster)
    services.create_nic(make_vm(cluster), user=None, profile=profile)

    services.update_vnic_profile(profile, user=None, port_mirroring=True, description="watch")

    profile.refresh_from_db()
    assert (profile.port_mirroring, profile.description) == (True, "watch")
    assert Event.objects.filter(code="UPDATE_VNIC_PROFILE").count() == 1


def test_remove_vnic_profile_refused_while_nics_use_it():
    cluster = make_cluster()
    _, profile = network_on(cluster)
    services.create_nic(make_vm(cluster, name="web"), user=None, profile=profile)

    with pytest.raises(ConflictError, match="used by NIC\\(s\\) web/nic1"):
        services.remove_vnic_profile(profile, user=None)


def test_remove_unused_vnic_profile():
    cluster = make_cluster()
    _, profile = network_on(cluster)

    services.remove_vnic_profile(profile, user=None)

    assert not VnicProfile.objects.filter(pk=profile.pk).exists()
    assert (
        Event.objects.get(code="REMOVE_VNIC_PROFILE").message
        == "vNIC profile blue was removed from network blue by the system."
    )
