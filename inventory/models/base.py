import uuid

from django.db import models


class OlvmModel(models.Model):
    """Base of every inventory object: a UUID like oVirt's ids, and timestamps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return getattr(self, "name", None) or str(self.id)
