"""The Blank template (oVirt's all-zero id) and oVirt's predefined instance types."""

import uuid

from django.db import migrations

BLANK_TEMPLATE_ID = uuid.UUID("00000000-0000-0000-0000-000000000000")

INSTANCE_TYPES = [
    ("Tiny", 512, 1),
    ("Small", 2048, 1),
    ("Medium", 4096, 2),
    ("Large", 8192, 2),
    ("XLarge", 16384, 4),
]


def seed(apps, schema_editor):
    Template = apps.get_model("compute", "Template")
    InstanceType = apps.get_model("compute", "InstanceType")
    Template.objects.get_or_create(
        id=BLANK_TEMPLATE_ID,
        defaults={
            "name": "Blank",
            "description": "Blank template",
            "version_number": 1,
            "memory_mib": 1024,
            "vcpus": 1,
            "os_type": "other",
            "console_type": "vnc",
        },
    )
    for name, memory_mib, vcpus in INSTANCE_TYPES:
        InstanceType.objects.get_or_create(
            name=name,
            defaults={"memory_mib": memory_mib, "vcpus": vcpus, "description": f"{name} instance type"},
        )


def unseed(apps, schema_editor):
    apps.get_model("compute", "InstanceType").objects.filter(name__in=[n for n, _, _ in INSTANCE_TYPES]).delete()
    apps.get_model("compute", "Template").objects.filter(id=BLANK_TEMPLATE_ID).delete()


class Migration(migrations.Migration):
    dependencies = [("compute", "0002_initial")]
    operations = [migrations.RunPython(seed, unseed)]
