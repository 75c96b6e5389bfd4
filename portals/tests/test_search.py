"""The oVirt-style search grammar of the VM and host lists: the parser alone, then the page."""

import pytest
from django.urls import reverse

from compute.choices import VmStatus
from portals.search import CONTAINS, EXACT, HOST_FIELDS, PREFIX, VM_FIELDS, SearchError, Term, parse_search
from tests.factories import make_cluster, make_data_center, make_host, make_vm


def test_terms_joined_by_and():
    assert parse_search("status=up and cluster=Default", VM_FIELDS) == [
        Term("status", "up", EXACT),
        Term("cluster", "Default", EXACT),
    ]


def test_and_is_case_insensitive_and_spaces_around_equals_are_allowed():
    assert parse_search("name = web01  AND  host=h1", VM_FIELDS) == [
        Term("name", "web01", EXACT),
        Term("host", "h1", EXACT),
    ]


def test_trailing_star_is_a_prefix_match():
    assert parse_search("name=web*", VM_FIELDS) == [Term("name", "web", PREFIX)]


def test_status_wildcard_must_match_some_status():
    assert parse_search("status=power*", VM_FIELDS) == [Term("status", "power", PREFIX)]
    with pytest.raises(SearchError, match="No status starts with 'zz'"):
        parse_search("status=zz*", VM_FIELDS)


def test_ovirt_prefix_is_accepted():
    assert parse_search("Vms: os=rhel*", VM_FIELDS) == [Term("os", "rhel", PREFIX)]
    assert parse_search("hosts: status=maintenance", HOST_FIELDS) == [Term("status", "maintenance", EXACT)]


def test_bare_word_searches_the_name():
    assert parse_search("web", VM_FIELDS) == [Term("name", "web", CONTAINS)]
    assert parse_search("web*", VM_FIELDS) == [Term("name", "web", PREFIX)]


def test_empty_search_has_no_terms():
    assert parse_search("   ", VM_FIELDS) == []
    assert parse_search("Vms:", VM_FIELDS) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour=red", "Unknown field 'colour'. Fields: name, status, cluster, datacenter, host, os."),
        ("status=upp", "Unknown status 'upp'."),
        ("status=up or status=down", "Only 'and' can join terms; 'or' is not supported."),
        ("status=up and", "'and' must join two terms"),
        ("and status=up", "'and' must join two terms"),
        ("name=", "'name=' needs a value."),
        ("name=w*b", "'*' is a wildcard only at the end of a value (in 'name=w*b')."),
        ("vcpus>2", "Unknown field 'vcpus'"),
        ("name!=web", "Only '=' is supported, not '!='"),
        ("(status=up)", "Parentheses are not supported"),
        ("name=a=b", "one '=' per term"),
        ("two words", "Cannot read 'two words'"),
    ],
)
def test_invalid_searches_say_why(text, message):
    with pytest.raises(SearchError) as caught:
        parse_search(text, VM_FIELDS)
    assert message in str(caught.value)


def test_host_search_has_no_vm_fields():
    with pytest.raises(SearchError, match="Unknown field 'os'. Fields: name, status, cluster, datacenter."):
        parse_search("os=rhel*", HOST_FIELDS)


@pytest.mark.django_db
def test_vm_list_applies_the_search(user_client):
    dc = make_data_center(name="DC1")
    default, other = make_cluster(dc, name="Default"), make_cluster(dc, name="Other")
    make_vm(default, status=VmStatus.UP, name="web-up")
    make_vm(default, status=VmStatus.DOWN, name="web-down")
    make_vm(other, status=VmStatus.UP, name="other-up")

    response = user_client.get(reverse("portals:vm-list"), {"q": "status=up and cluster=Default"})

    assert response.status_code == 200
    assert [vm.name for vm in response.context["table"].data] == ["web-up"]


@pytest.mark.django_db
def test_vm_list_prefix_search_on_data_center_and_host(user_client):
    cluster = make_cluster(make_data_center(name="Paris"), name="C1")
    host = make_host(cluster, name="node-a")
    make_vm(cluster, status=VmStatus.UP, run_on_host=host, name="app1")
    make_vm(make_cluster(make_data_center(name="Lyon")), status=VmStatus.UP, name="app2")

    response = user_client.get(reverse("portals:vm-list"), {"q": "datacenter=par* and host=NODE-A"})

    assert [vm.name for vm in response.context["table"].data] == ["app1"]


@pytest.mark.django_db
def test_invalid_search_shows_the_reason_not_a_500(user_client):
    make_vm(name="web-up")

    response = user_client.get(reverse("portals:vm-list"), {"q": "status=upp"})

    assert response.status_code == 200
    assert list(response.context["table"].data) == []
    assert "Invalid search: Unknown status &#x27;upp&#x27;." in response.content.decode()


@pytest.mark.django_db
def test_host_list_applies_the_search(user_client):
    cluster = make_cluster(name="Default")
    make_host(cluster, name="h-up", status="up")
    make_host(cluster, name="h-maint", status="maintenance")

    response = user_client.get(reverse("portals:host-list"), {"q": "Hosts: status=maintenance and cluster=Default"})

    assert response.status_code == 200
    assert [host.name for host in response.context["table"].data] == ["h-maint"]
    bad = user_client.get(reverse("portals:host-list"), {"q": "os=rhel*"})
    assert bad.status_code == 200
    assert "Unknown field &#x27;os&#x27;" in bad.content.decode()
