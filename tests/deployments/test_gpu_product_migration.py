"""A deployment's stored resources name the GPU type `gpu_product` (the nvidia.com/gpu.product
node label); the migration renamed the old key `gpu_model`, and going back renames it again."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.deployments import kserve
from apps.deployments.models import Deployment, Revision

A100 = "NVIDIA-A100-SXM4-80GB"
BEFORE = ("deployments", "0002_environment")
AFTER = ("deployments", "0003_resources_gpu_product")


def migrate_to(target: tuple[str, str] | None) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())


def stored(deployment: Deployment) -> dict[str, object]:
    return dict(Deployment.objects.values_list("resources", flat=True).get(pk=deployment.pk))


@pytest.mark.django_db(transaction=True)
def test_the_migration_renames_the_key_of_a_stored_deployment_and_back(
    deployment: Deployment, no_reconcile: list[int]
) -> None:
    new_style = {"cpu": "4", "memory": "16Gi", "gpus": 1, "gpu_product": A100}
    cpu_only = {"cpu": "1", "memory": "2Gi"}
    Deployment.objects.filter(pk=deployment.pk).update(resources=new_style)
    other = Deployment.objects.get(pk=deployment.pk)
    other.pk, other.name = None, "cpu-only"
    other.resources = cpu_only
    other.save()
    try:
        migrate_to(BEFORE)
        assert stored(deployment) == {"cpu": "4", "memory": "16Gi", "gpus": 1, "gpu_model": A100}
        assert stored(other) == cpu_only
    finally:
        migrate_to(None)
    assert AFTER in MigrationExecutor(connection).loader.applied_migrations
    assert stored(deployment) == new_style
    assert stored(other) == cpu_only
    # the migrated row selects the node label again
    deployment.refresh_from_db()
    served = Revision.objects.create(deployment=deployment, number=1, version=1)
    assert kserve.build_predictor(served, "s3://m/1")["nodeSelector"] == {"nvidia.com/gpu.product": A100}
