"""Reads for the models pages and the API: what MLflow says about a project's models,
joined with what Plinth records (history, flags, open requests) in a fixed number of
queries, whatever the number of models, versions or history rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db.models import Prefetch, QuerySet

from apps.projects.models import Project
from apps.registry.mlflow import RegistryGateway, aliases_of, registry, tags_of
from apps.registry.models import (
    IN_FLIGHT,
    AliasHistory,
    Decision,
    PromotionRequest,
    RegisteredModel,
    Source,
    Status,
    Vote,
)
from apps.registry.policies import pending_count  # re-exported: the navigation's badge

__all__ = [
    "ModelView",
    "history",
    "model_views",
    "one_model",
    "outside_run",
    "pending_count",
    "requests_with_votes",
    "scoped_runs",
]


def _when(millis: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    except (TypeError, ValueError):
        return None


@dataclass
class ModelView:
    """One registered model as the pages and the API show it."""

    name: str
    project: str
    description: str = ""
    aliases: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    drift: list[str] = field(default_factory=list)  # aliases whose holder was set outside Plinth
    pending: int = 0  # requests waiting for a decision or being applied

    @property
    def latest_version(self) -> int | None:
        return max((int(v["version"]) for v in self.versions), default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "project": self.project,
            "description": self.description,
            "aliases": self.aliases,
            "tags": self.tags,
            "latest_version": self.latest_version,
            "versions": self.versions,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "changed_outside_plinth": self.drift,
            "open_requests": self.pending,
        }


def _version(item: dict[str, Any], aliases: dict[str, int]) -> dict[str, Any]:
    number = int(item["version"])
    return {
        "version": number,
        "run_id": item.get("run_id", ""),
        "status": item.get("status", ""),
        "source": item.get("source", ""),
        "created_at": _when(item.get("creation_timestamp")),
        "aliases": sorted(alias for alias, held in aliases.items() if held == number),
        "tags": tags_of(item),
    }


def _flags(names: list[str]) -> tuple[dict[str, list[str]], Counter[str]]:
    """Per model name: aliases currently flagged as changed outside Plinth, and how many
    requests are open. Two queries for any number of models."""
    drift: dict[str, list[str]] = {}
    for name, alias in AliasHistory.objects.filter(
        model__name__in=names, valid_to__isnull=True, source=Source.OUTSIDE
    ).values_list("model__name", "alias"):
        drift.setdefault(name, []).append(alias)
    open_requests = Counter(
        PromotionRequest.objects.filter(model__name__in=names, status__in=[Status.PENDING, *IN_FLIGHT]).values_list(
            "model__name", flat=True
        )
    )
    return drift, open_requests


def model_views(
    projects: list[Project], gateway: RegistryGateway | None = None, *, with_versions: bool = True
) -> list[ModelView]:
    """The registered models of `projects` from MLflow (one search per project, or one for
    all when there are many), with their versions (one batched call) and Plinth's flags."""
    gateway = gateway or registry()
    by_slug = {p.full_slug: p for p in projects}
    found: list[dict[str, Any]] = []
    if len(projects) <= 3:
        for project in projects:
            found.extend(gateway.project_models(project.full_slug))
    else:
        found = [m for m in gateway.plinth_models() if tags_of(m).get("plinth.project") in by_slug]
    found.sort(key=lambda m: m["name"])
    versions: dict[str, list[dict[str, Any]]] = {}
    if with_versions:
        for item in gateway.model_versions(m["name"] for m in found):
            versions.setdefault(item["name"], []).append(item)
    drift, open_requests = _flags([m["name"] for m in found])
    views = []
    for item in found:
        aliases = aliases_of(item)
        listed = versions.get(item["name"]) if with_versions else item.get("latest_versions", [])
        views.append(
            ModelView(
                name=item["name"],
                project=tags_of(item).get("plinth.project", ""),
                description=item.get("description", ""),
                aliases=aliases,
                tags=tags_of(item),
                versions=[_version(v, aliases) for v in listed or []],
                created_at=_when(item.get("creation_timestamp")),
                updated_at=_when(item.get("last_updated_timestamp")),
                drift=sorted(drift.get(item["name"], [])),
                pending=open_requests.get(item["name"], 0),
            )
        )
    return views


def one_model(model: RegisteredModel, gateway: RegistryGateway | None = None) -> tuple[ModelView, dict[str, Any]]:
    """One model with every version, and the runs behind its versions (with metrics)."""
    gateway = gateway or registry()
    item = gateway.get_registered_model(model.name) or {"name": model.name}
    aliases = aliases_of(item)
    listed = gateway.model_versions([model.name])
    drift, open_requests = _flags([model.name])
    view = ModelView(
        name=model.name,
        project=model.project.full_slug,
        description=item.get("description", ""),
        aliases=aliases,
        tags=tags_of(item),
        versions=[_version(v, aliases) for v in listed],
        created_at=_when(item.get("creation_timestamp")),
        updated_at=_when(item.get("last_updated_timestamp")),
        drift=sorted(drift.get(model.name, [])),
        pending=open_requests.get(model.name, 0),
    )
    # The newest 50 versions' runs: older ones are rarely what anyone compares.
    runs = scoped_runs(model.project, gateway.run_summaries(v["run_id"] for v in view.versions[:50]))
    return view, runs


def outside_run(run_id: str) -> dict[str, Any]:
    """What pages and the API show of a run outside the project: its id and the fact, no
    name, status, params or metrics."""
    return {"run_id": run_id, "outside_project": True, "run_name": "", "status": "", "metrics": {}}


def scoped_runs(project: Project, summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`summaries` ({run_id: {run_name, status, experiment_id, metrics}}, from
    `RegistryGateway.run_summaries`) with every run that is not in `project`'s experiment
    (apps.tracking.lookups.run_in_project, by experiment id) replaced by `outside_run`: a
    model tagged into a project may have versions made from another team's runs."""
    from apps.tracking.lookups import run_in_project

    scoped: dict[str, dict[str, Any]] = {}
    for run_id, summary in summaries.items():
        if run_in_project(project, summary.get("experiment_id")):
            scoped[run_id] = {**summary, "outside_project": False}
        else:
            scoped[run_id] = outside_run(run_id)
    return scoped


def requests_with_votes(queryset: QuerySet[PromotionRequest]) -> QuerySet[PromotionRequest]:
    """Requests with what their rows show (project, model, requester, votes and voters)
    loaded in a fixed number of queries."""
    return queryset.select_related("project__team", "model", "requested_by").prefetch_related(
        Prefetch("votes", queryset=Vote.objects.select_related("voter").order_by("created_at", "id"))
    )


def history(model: RegisteredModel) -> QuerySet[AliasHistory]:
    """The alias history of `model`, newest first, with each row's request, requester and
    approvers (three queries in all)."""
    if model.pk is None:
        return AliasHistory.objects.none()
    approvals = Vote.objects.filter(decision=Decision.APPROVE).select_related("voter").order_by("created_at", "id")
    return (
        AliasHistory.objects.filter(model=model)
        .select_related("request__requested_by")
        .prefetch_related(Prefetch("request__votes", queryset=approvals, to_attr="approvals"))
        .order_by("-valid_from", "-id")
    )
