"""Lookups of MLflow runs for a user, used by pages, the API and tasks alike.

A run is visible when its experiment is the experiment of a project the user can see
(apps.access decides that); anything else — a run of another team's project, a run of an
experiment no project links, a run id that does not exist — is the same 404, so a run id
tells an outsider nothing. A deleted run of a visible project is reported as deleted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.http import Http404

from apps.access.lookups import get_project_by_slug_for_user
from apps.access.roles import Action
from apps.core.errors import InvalidInput
from apps.projects.models import Project
from apps.tracking.fetch import in_parallel
from apps.tracking.gateway import MlflowError, gateway
from apps.tracking.runs import Run, attach, run_in_project

__all__ = ["get_project_run_for_user", "get_run_for_user", "get_run_in_project", "get_runs_for_user", "run_in_project"]

RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# runs/search with `run_id IN (...)`: this many ids a call keeps the filter short.
IDS_PER_SEARCH = 100
MAX_COMPARE_RUNS = 2000


def visible_projects(user: Any) -> dict[str, Project]:
    """The projects `user` may see that have an MLflow experiment, by experiment id."""
    projects = Project.objects.for_user(user, Action.VIEW).exclude(mlflow_experiment_id="").select_related("team")
    return {p.mlflow_experiment_id: p for p in projects}


def parse_run_ids(values: list[str]) -> list[str]:
    """Run ids from repeated and/or comma-separated values, in order, without repeats; a
    malformed one is a 400 (field `run_ids`)."""
    ids: list[str] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if not RUN_ID.match(part):
                raise InvalidInput.field("run_ids", f"{part[:80]!r} is not an MLflow run id.")
            if part not in ids:
                ids.append(part)
    if len(ids) > MAX_COMPARE_RUNS:
        raise InvalidInput.field("run_ids", f"Compare at most {MAX_COMPARE_RUNS} runs at a time.")
    return ids


@dataclass
class RunSet:
    """Runs resolved for a user: `runs` (active, in the order asked) and `deleted` ids."""

    runs: list[Run]
    deleted: list[str]
    projects: dict[str, Project]


def get_runs_for_user(user: Any, run_ids: list[str]) -> RunSet:
    """Resolve run ids with one runs/search per 100 ids (in parallel), restricted to the
    experiments of the user's projects and including deleted runs. 404 when any id is not
    a run of a project the user can see."""
    projects = visible_projects(user)
    if not run_ids:
        return RunSet([], [], projects)
    if not projects:
        raise Http404("No such run.")
    experiments = sorted(projects)
    chunks = [run_ids[i : i + IDS_PER_SEARCH] for i in range(0, len(run_ids), IDS_PER_SEARCH)]

    def search(chunk: list[str]) -> list[dict[str, Any]]:
        quoted = ",".join(f"'{run_id}'" for run_id in chunk)  # ids matched RUN_ID: no quotes inside
        runs, _ = gateway().search_runs(
            experiments, f"attributes.run_id IN ({quoted})", max_results=len(chunk), run_view_type="ALL"
        )
        return runs

    found: dict[str, Run] = {}
    wanted = set(run_ids)
    for raw_runs in in_parallel(search, chunks):
        for raw in raw_runs:
            run = Run.from_mlflow(raw)
            if run.run_id in wanted and run_in_project(projects.get(run.experiment_id), run.experiment_id):
                found[run.run_id] = run
    unknown = [run_id for run_id in run_ids if run_id not in found]
    if unknown:
        raise Http404(f"No such run: {unknown[0]}.")
    runs = [found[run_id] for run_id in run_ids if not found[run_id].is_deleted]
    attach(runs, projects)
    return RunSet(runs, [run_id for run_id in run_ids if found[run_id].is_deleted], projects)


def get_run_for_user(user: Any, run_id: str) -> Run:
    """One visible, not deleted run (404 otherwise)."""
    if not RUN_ID.match(run_id or ""):
        raise Http404("No such run.")
    found = get_runs_for_user(user, [run_id])
    if not found.runs:
        raise Http404("This run was deleted.")
    return found.runs[0]


def get_project_run_for_user(
    user: Any, team_slug: str, slug: str, run_id: str, action: Action | str = Action.VIEW
) -> tuple[Project, Run]:
    """A run of the project team/slug: the project's access rules first (404 invisible,
    403 not allowed, without asking MLflow), then the run itself, which must live in the
    project's experiment and not be deleted (404 otherwise)."""
    project = get_project_by_slug_for_user(user, team_slug, slug, action)
    return project, get_run_in_project(project, run_id)


def get_run_in_project(project: Project, run_id: str) -> Run:
    """The run `run_id` of `project`'s experiment, not deleted (404 otherwise). The caller
    has checked the user's access to `project`."""
    if not project.mlflow_experiment_id or not RUN_ID.match(run_id or ""):
        raise Http404("No such run.")
    try:
        run = Run.from_mlflow(gateway().get_run(run_id))
    except MlflowError:
        raise Http404("No such run.") from None
    if not run_in_project(project, run.experiment_id) or run.is_deleted:
        raise Http404("No such run.")
    attach([run], {project.mlflow_experiment_id: project})
    return run
