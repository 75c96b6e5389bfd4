"""The Default MAC pool, as oVirt ships one (a locally administered 56:6f range)."""

from django.db import migrations


def seed(apps, schema_editor):
    MacPool = apps.get_model("networking", "MacPool")
    MacPool.objects.get_or_create(
        name="Default",
        defaults={
            "description": "Default MAC pool",
            "allow_duplicates": False,
            "ranges": [{"from": "56:6f:1a:2b:00:00", "to": "56:6f:1a:2b:ff:ff"}],
        },
    )


def unseed(apps, schema_editor):
    apps.get_model("networking", "MacPool").objects.filter(name="Default").delete()


class Migration(migrations.Migration):
    dependencies = [("networking", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
