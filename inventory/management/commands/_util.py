"""Shared bits of the admin commands: the acting user, error translation, table output."""

from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from inventory.exceptions import ConflictError


def acting_user(username: str | None):
    if not username:
        return None
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No user named {username!r}.") from None


@contextmanager
def service_errors():
    """Turn the services' refusals into a clear CommandError (exit 1), never a traceback."""
    try:
        yield
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            text = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
        else:
            text = " ".join(exc.messages)
        raise CommandError(f"Invalid input: {text}") from None
    except ConflictError as exc:
        raise CommandError(f"Refused: {exc.message}") from None


def table(rows: list[tuple], headers: tuple) -> str:
    cells = [tuple(str(c) for c in headers)] + [tuple("" if c is None else str(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
