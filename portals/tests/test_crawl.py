"""A crawler follows every link of the administration portal from the dashboard: no page
answers 5xx and no link is broken (404). Destructive actions are only GET-rendered (their
confirmation pages); nothing is POSTed."""

import re
from collections import deque
from urllib.parse import urljoin, urlsplit

import pytest

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
