"""Query expressions shared by the portal views and the system tree."""

from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce


def count_of(model, field: str, **filters) -> Subquery:
    """A correlated COUNT(*) of `model` rows whose `field` points at the outer row."""
    rows = model.objects.filter(**{field: OuterRef("pk")}, **filters).order_by().values(field)
    return Coalesce(
        Subquery(rows.annotate(n=Count("*")).values("n"), output_field=IntegerField()),
        Value(0),
        output_field=IntegerField(),
    )
