"""Stored resources name the GPU type `gpu_product` (the value of the nvidia.com/gpu.product
node label), no longer `gpu_model`: templates' default and maximum resources, launches' and
sweeps' resources. Reversible: going back renames the key again."""

from typing import Any

from django.db import migrations

# (model, its JSON resource fields)
FIELDS = {
    "Template": ("default_resources", "max_resources"),
    "Launch": ("resources",),
    "Sweep": ("resources",),
}


def renamed(resources: Any, old: str, new: str) -> Any:
    """`resources` with the key `old` renamed `new` (a non-empty `new` already there wins);
    anything but a dict holding `old` comes back as it is."""
    if not isinstance(resources, dict) or old not in resources:
        return resources
    value = resources.pop(old)
    if not resources.get(new):
        resources[new] = value
    return resources


def rename_key(apps: Any, old: str, new: str) -> None:
    for model_name, fields in FIELDS.items():
        model = apps.get_model("launches", model_name)
        for field in fields:
            rows = model.objects.filter(**{f"{field}__has_key": old}).values_list("pk", field)
            for pk, resources in list(rows):
                model.objects.filter(pk=pk).update(**{field: renamed(resources, old, new)})


def forward(apps: Any, schema_editor: Any) -> None:
    rename_key(apps, "gpu_model", "gpu_product")


def backward(apps: Any, schema_editor: Any) -> None:
    rename_key(apps, "gpu_product", "gpu_model")


class Migration(migrations.Migration):
    dependencies = [
        ("launches", "0008_sweep_environment_template_objective"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
