"""Drift: MLflow's aliases compared with Plinth's history. An alias moved directly in
MLflow (anyone with edit rights there can) is recorded as "changed outside Plinth",
flagged on the model page and told to the team's leads. Also here: putting back an alias
that a failed apply may have moved, and mirroring the models MLflow tags for a project."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.launches.models import Launch
from apps.launches.models import Status as LaunchStatus
from apps.projects.models import Project
from apps.registry import notices
from apps.registry.mlflow import RegistryGateway, aliases_of, registry, tags_of
from apps.registry.models import (
    IN_FLIGHT,
    PROJECT_TAG,
    AliasHistory,
    PromotionRequest,
    RegisteredModel,
    Source,
    Status,
)

logger = logging.getLogger(__name__)

# How far back the reconciler looks for launches whose runs may have registered a model.
ADOPT_WINDOW = timedelta(days=1)


def settle_reverts(gateway: RegistryGateway, model: RegisteredModel, alias: str | None = None) -> int:
    """Undo the possible half of failed applies: where a failed request's version holds the
    alias, point it back at the version it replaced (or remove it if there was none).
    Returns how many aliases were put back. Needs MLflow (MlflowUnavailable otherwise)."""
    failed = PromotionRequest.objects.filter(model=model, status=Status.FAILED, revert_needed=True)
    if alias is not None:
        failed = failed.filter(alias=alias)
    put_back = 0
    for request in failed.select_related("project__team").order_by("-updated_at"):
        holder = gateway.get_alias(model.name, request.alias)
        if holder == request.version and request.previous_known:
            if request.previous_version is not None:
                gateway.set_alias(model.name, request.alias, request.previous_version)
            else:
                gateway.delete_alias(model.name, request.alias)
            put_back += 1
            record(
                None, AuditVerb.PROMOTION_REVERTED, request, team=request.project.team, project=request.project,
                after={"alias": request.alias, "version": request.previous_version},
            )  # fmt: skip
        PromotionRequest.objects.filter(pk=request.pk, revert_needed=True).update(revert_needed=False)
    return put_back


def sync_aliases(model: RegisteredModel, aliases: dict[str, int]) -> list[AliasHistory]:
    """Record where MLflow's aliases of `model` ({alias: version}) differ from the history:
    a change (or a removal) is "changed outside Plinth"; an alias seen for the first time
    is "found in MLflow". Aliases with a request in flight are left to the apply task."""
    recorded: list[AliasHistory] = []
    with transaction.atomic():
        model = RegisteredModel.objects.select_for_update(of=("self",)).select_related("project__team").get(pk=model.pk)
        busy = set(
            PromotionRequest.objects.filter(model=model, status__in=IN_FLIGHT).values_list("alias", flat=True)
        ) | set(
            PromotionRequest.objects.filter(model=model, status=Status.FAILED, revert_needed=True).values_list(
                "alias", flat=True
            )
        )
        current = {row.alias: row for row in AliasHistory.objects.filter(model=model, valid_to__isnull=True)}
        now = timezone.now()
        for alias in sorted(set(aliases) | set(current)):
            row = current.get(alias)
            believed = row.version if row is not None else None
            version = aliases.get(alias)
            if alias in busy or version == believed:
                continue
            if row is not None:
                row.valid_to = now
                row.save(update_fields=["valid_to"])
            source = Source.OUTSIDE if row is not None else Source.OBSERVED
            made = AliasHistory.objects.create(
                model=model, alias=alias, version=version, previous_version=believed, valid_from=now, source=source
            )
            recorded.append(made)
            verb = AuditVerb.ALIAS_CHANGED_OUTSIDE if source == Source.OUTSIDE else AuditVerb.ALIAS_OBSERVED
            record(
                None, verb, model, team=model.project.team, project=model.project,
                before={"alias": alias, "version": believed}, after={"alias": alias, "version": version},
            )  # fmt: skip
            if source == Source.OUTSIDE:
                notices.changed_outside(model, alias, version, believed)
            from apps.deployments.rollout import alias_moved

            alias_moved(model.name, alias)  # deployments following it roll out (after commit)
    return recorded


def _differs(model: RegisteredModel, aliases: dict[str, int], current: dict[tuple[int, str], int | None]) -> bool:
    mine = {alias: version for (pk, alias), version in current.items() if pk == model.pk}
    return {a: v for a, v in mine.items() if v is not None} != aliases


def adopt_launch_models(gateway: RegistryGateway, tagged: set[str]) -> list[dict[str, Any]]:
    """Tag with `plinth.project` the models registered from the runs of recent launches
    (a training script registers with the plain MLflow client, which knows nothing of
    projects; the launch's run does). A model already tagged keeps its tag. Returns the
    models newly tagged, as MLflow now describes them."""
    since = timezone.now() - ADOPT_WINDOW
    launches = (
        Launch.objects.filter(status=LaunchStatus.SUCCEEDED, finished_at__gt=since)
        .exclude(mlflow_run_id="")
        .select_related("project__team")
        .order_by("-finished_at")[:500]
    )
    project_of_run = {launch.mlflow_run_id: launch.project for launch in launches}
    adopted: list[dict[str, Any]] = []
    for version in gateway.versions_of_runs(project_of_run):
        name = version["name"]
        if name in tagged:
            continue
        tagged.add(name)
        found = gateway.get_registered_model(name)
        if found is None or tags_of(found).get(PROJECT_TAG):
            continue
        project = project_of_run[version["run_id"]]
        gateway.set_registered_model_tag(name, PROJECT_TAG, project.full_slug)
        logger.info("tagged model %s with project %s (registered from a launch)", name, project.full_slug)
        adopted.append({**found, "tags": [*found.get("tags", []), {"key": PROJECT_TAG, "value": project.full_slug}]})
    return adopted


def reconcile() -> dict[str, int]:
    """One pass (beat): tag the models registered from Plinth launches, mirror every model
    MLflow tags with a known project, undo failed half-applies, and record aliases changed
    outside Plinth. MLflow down: nothing to do, the next pass tries again
    (MlflowUnavailable propagates to the task)."""
    gateway = registry()
    counts = {"models": 0, "mirrored": 0, "reverted": 0, "recorded": 0, "adopted": 0}
    found = gateway.plinth_models()
    adopted = adopt_launch_models(gateway, {item["name"] for item in found})
    counts["adopted"] = len(adopted)
    found.extend(adopted)
    projects = {p.full_slug: p for p in Project.objects.select_related("team")}
    rows = {row.name: row for row in RegisteredModel.objects.select_related("project__team")}
    current = {
        (model_id, alias): version
        for model_id, alias, version in AliasHistory.objects.filter(valid_to__isnull=True).values_list(
            "model_id", "alias", "version"
        )
    }
    reverting = set(
        PromotionRequest.objects.filter(status=Status.FAILED, revert_needed=True).values_list("model_id", flat=True)
    )
    for item in found:
        project = projects.get(tags_of(item).get(PROJECT_TAG, ""))
        if project is None:
            continue  # tagged with a project Plinth does not have
        counts["models"] += 1
        row = rows.get(item["name"])
        if row is None:
            row, made = RegisteredModel.objects.get_or_create(name=item["name"], defaults={"project": project})
            counts["mirrored"] += int(made)
        if row.project_id != project.pk:
            _move_model(row, project)
        aliases = aliases_of(item)
        if row.pk in reverting:
            counts["reverted"] += settle_reverts(gateway, row)
            again = gateway.get_registered_model(row.name)
            aliases = aliases_of(again) if again else {}
        if _differs(row, aliases, current):
            counts["recorded"] += len(sync_aliases(row, aliases))
    return counts


def _move_model(row: RegisteredModel, project: Project) -> None:
    """Someone re-tagged the model in MLflow: the tag is the truth, so the mirror follows."""
    with transaction.atomic():
        before = row.project.full_slug
        RegisteredModel.objects.filter(pk=row.pk).update(project=project)
        row.project = project
        record(
            None, AuditVerb.MODEL_MOVED, row, team=project.team, project=project,
            before={"project": before}, after={"project": project.full_slug},
        )  # fmt: skip
