"""Errors the engine's services raise; the API and portal turn them into 400 / 409."""

from django.core.exceptions import ValidationError

__all__ = ["ConflictError", "InvalidTransition", "ValidationError"]


class ConflictError(Exception):
    """The action is not allowed in the object's current state (HTTP 409)."""

    def __init__(self, message: str, *, code: str = "conflict", details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details  # machine-readable context (e.g. a refused placement), sent when set


class InvalidTransition(ConflictError):
    def __init__(self, kind: str, current: str, target: str):
        super().__init__(
            f"{kind} status cannot change from '{current}' to '{target}'.",
            code="invalid_transition",
        )
        self.kind = kind
        self.current = current
        self.target = target
