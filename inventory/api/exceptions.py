"""Map the engine's errors onto HTTP: invalid -> 400 with field messages, conflict -> 409."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..exceptions import ConflictError


def django_error_detail(exc: DjangoValidationError) -> dict | list:
    if hasattr(exc, "error_dict"):
        return {
            ("non_field_errors" if field == "__all__" else field): [m for e in errs for m in e.messages]
            for field, errs in exc.error_dict.items()
        }
    return {"non_field_errors": exc.messages}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(django_error_detail(exc))
    elif isinstance(exc, ConflictError):
        body = {"detail": exc.message, "code": exc.code}
        if exc.details is not None:
            body["details"] = exc.details
        return Response(body, status=status.HTTP_409_CONFLICT)
    elif isinstance(exc, IntegrityError):
        return Response(
            {
                "detail": "The change conflicts with existing data (a name or value must be unique).",
                "code": "integrity",
            },
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)
