"""Fixtures of the API tests; objects come from tests/factories.py."""

import pytest

from tests.factories import make_cluster, make_data_center


@pytest.fixture
def dc(db):
    return make_data_center()


@pytest.fixture
def cluster(dc):
    return make_cluster(dc)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """PBKDF2 takes most of a second per password; these tests are not about hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
