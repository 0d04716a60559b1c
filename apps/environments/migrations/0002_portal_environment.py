"""The platform's first default environment: the portal's own interpreter and packages
(what every local launch ran in before environments existed). Existing projects get it."""

from django.db import migrations


def forwards(apps, schema_editor):
    Environment = apps.get_model("environments", "Environment")
    Project = apps.get_model("projects", "Project")
    portal, _ = Environment.objects.get_or_create(
        team=None,
        name="portal",
        version=1,
        defaults={
            "description": "The portal's own Python interpreter and packages (local backend); "
            "on Kubernetes, each template's image.",
            "is_portal": True,
            "state": "ready",
            "is_default": not Environment.objects.filter(is_default=True).exists(),
        },
    )
    Project.objects.filter(environment__isnull=True).update(environment=portal)


def backwards(apps, schema_editor):
    Project = apps.get_model("projects", "Project")
    Project.objects.filter(environment__is_portal=True).update(environment=None)
    apps.get_model("environments", "Environment").objects.filter(is_portal=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("environments", "0001_initial"),
        ("projects", "0005_project_environment"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
