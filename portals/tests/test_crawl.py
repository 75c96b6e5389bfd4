"""A crawler follows every link of the administration portal from the dashboard, and of the
VM portal as a VM user: no page answers 5xx and no link is broken (404); the VM user reaches
nothing of the administration portal nor another user's VM. Destructive actions are only
GET-rendered (their confirmation pages); nothing is POSTed."""

import re
from collections import deque
from urllib.parse import urljoin, urlsplit

import pytest
from django.test import Client

from tests.factories import grant, make_user, make_vm

HREF = re.compile(r'href="([^"#]+)"')
SKIP = ("/logout/", "/static/", "/api/schema/", "/ws/")
MAX_PAGES = 600


def crawl(client, start: str = "/") -> tuple[dict[str, int], list[tuple[str, str]]]:
    seen: dict[str, int] = {}
    broken: list[tuple[str, str]] = []
    queue = deque([(start, "(start)")])
    while queue and len(seen) < MAX_PAGES:
        url, source = queue.popleft()
        if url in seen:
            continue
        response = client.get(url)
        seen[url] = response.status_code
        if response.status_code >= 500 or response.status_code == 404:
            broken.append((url, f"{response.status_code} (linked from {source})"))
            continue
        if response.status_code in (301, 302):
            location = urljoin(url, response["Location"])
            if urlsplit(location).netloc in ("", "testserver"):
                queue.append(
                    (
                        urlsplit(location).path + (f"?{urlsplit(location).query}" if urlsplit(location).query else ""),
                        url,
                    )
                )
            continue
        if "text/html" not in response.get("Content-Type", ""):
            continue
        for href in HREF.findall(response.content.decode()):
            href = href.replace("&amp;", "&")
            target = urljoin(url, href)
            parts = urlsplit(target)
            if parts.netloc not in ("", "testserver") or parts.scheme not in ("", "http"):
                continue
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            if not path.startswith(SKIP) and path not in seen:
                queue.append((path, url))
    return seen, broken


@pytest.mark.django_db
def test_every_admin_portal_page_reachable_from_the_dashboard_renders(user_client, seeded):
    seen, broken = crawl(user_client)
    assert broken == []
    # It really went everywhere: lists, details and their tabs, forms, confirmations.
    paths = {urlsplit(u).path for u in seen}
    assert len(seen) > 60, sorted(seen)
    for expected in ("/vms/", "/hosts/", "/clusters/", "/templates/", "/storage-domains/", "/events/", "/jobs/"):
        assert expected in paths
    vm = seeded["vm"]
    assert f"/vms/{vm.pk}/" in paths
    assert any(p.startswith(f"/vms/{vm.pk}/") and p.endswith("/edit/") for p in paths)


@pytest.fixture
def vm_user(seeded):
    """A VM portal user: UserRole on the seeded VM web-01, nothing else."""
    user = make_user("vm-user")
    grant(user, "UserRole", seeded["vm"])
    return user


@pytest.mark.django_db
def test_a_vm_user_crawling_the_vm_portal_stays_in_it_and_is_refused_the_admin_portal(user_client, seeded, vm_user):
    admin_pages, _ = crawl(user_client)
    theirs = make_vm(seeded["cluster"], name="someone-elses", owner=make_user("someone"))
    client = Client()
    client.force_login(vm_user)

    seen, broken = crawl(client, "/vm-portal/")

    assert broken == []
    # Every link of the VM portal stays in it: its VM, console, confirmations, snapshots, New VM.
    vm, snapshot = seeded["vm"], seeded["snapshot"]
    mine = f"/vm-portal/vms/{vm.pk}/"
    assert sorted(seen) == sorted(  # "add/" sorts before or after the VM's random id
        [
            "/vm-portal/",
            mine,
            f"{mine}console/",
            f"{mine}console/?kind=serial",
            f"{mine}console/?kind=vnc",
            f"{mine}poweroff/",
            f"{mine}shutdown/",
            f"{mine}snapshots/{snapshot.pk}/remove/",
            f"{mine}snapshots/{snapshot.pk}/revert/",
            "/vm-portal/vms/add/",
        ]
    )
    assert set(seen.values()) == {200}
    # No page of the administration portal answers (each view once, whatever its query string).
    admin_paths = {urlsplit(url).path for url in admin_pages} - {"/api/docs/"}
    assert len(admin_paths) > 40 and not any(path.startswith("/vm-portal/") for path in admin_paths)
    answered = {path: client.get(path) for path in sorted(admin_paths)}
    assert {
        path: response.status_code
        for path, response in answered.items()
        if response.status_code != 403 and not response.get("Location", "").startswith("/login/")
    } == {}
    # Another user's VM: 403, saying nothing about it.
    for url in (
        f"/vm-portal/vms/{theirs.pk}/",
        f"/vm-portal/vms/{theirs.pk}/console/",
        f"/vm-portal/vms/{theirs.pk}/poweroff/",
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "someone-elses" not in response.content.decode()
