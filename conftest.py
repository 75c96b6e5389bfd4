"""Fixtures shared by every test (pytest-django); apps add their own in tests/conftest.py.

Tests use the services named by the environment, unchanged: DATABASE_URL (pytest-django
creates and drops test_<name>) and REDIS_URL, db index included, so a run can be kept
away from the Redis db of a running `make run` by choosing another index.
"""

import os
import sys

import pytest

ADMIN_PASSWORD = "admin-password-for-tests"


def pytest_configure(config):
    from django.conf import settings as django_settings

    # Tests log users in all the time: a fast hasher instead of 1,000,000 PBKDF2 rounds.
    django_settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Connections opened by async tests' worker threads close after use, so the test
    # database can be dropped at the end.
    django_settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Under pytest-xdist every worker is its own process on the same Redis db: give each
    # one its own Channels key prefix so their groups and channels never mix.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and os.environ.get("DJANGO_SETTINGS_MODULE"):
        from django.conf import settings

        config = settings.CHANNEL_LAYERS["default"].setdefault("CONFIG", {})
        config["prefix"] = f"{settings.OLVM_CHANNEL_PREFIX}test-{worker}:"
        django_settings.CACHES["default"]["KEY_PREFIX"] = f"olvm-test-{worker}"
    # The engine CA and certificates of a test run live in a directory of its own, never
    # in var/pki of a `make run` on the same checkout.
    if "OLVM_PKI_DIR" not in os.environ:
        import tempfile

        django_settings.OLVM_PKI_DIR = tempfile.mkdtemp(prefix="olvm-test-pki-")


@pytest.fixture
def admin_user(django_user_model):
    """A staff superuser named admin, password ADMIN_PASSWORD."""
    user, _ = django_user_model.objects.get_or_create(
        username="admin", defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True}
    )
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(ADMIN_PASSWORD)
    user.save()
    return user


@pytest.fixture
def api_client(admin_user):
    """A DRF APIClient authenticated as admin_user."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user=admin_user)
    return client


@pytest.fixture
def user_client(admin_user):
    """A Django test Client with a logged-in session of admin_user (portal pages)."""
    from django.test import Client

    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture(autouse=True)
def _history_buffer_per_test():
    """Samples a test buffered for the monitoring history but did not flush are dropped with
    it: they belong to its database, which is gone by the time the process exits."""
    yield
    if "inventory.history" in sys.modules:
        from inventory import history

        history.forget()
