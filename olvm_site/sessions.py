"""Database sessions that treat a malformed session cookie as no session.

Django's database backend looks a `sessionid` cookie up as it is; PostgreSQL refuses a
key holding a NUL byte, so a forged cookie turned every page into a 500. Keys Django
issues are ASCII letters and digits: anything else is simply not a session.
"""

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key) -> bool:
        return super()._validate_session_key(key) and key.isascii() and key.isalnum()
