"""Nested runs: MLflow marks a child run with the tag `mlflow.parentRunId` (what
`mlflow.start_run(nested=True)` sets, and Plinth on a sweep's trials). The runs table
groups a page's runs into families (a parent, then its descendants, indented); the run
page lists a run's children."""

from __future__ import annotations

from dataclasses import dataclass

from apps.projects.models import Project
from apps.tracking.gateway import gateway
from apps.tracking.runs import MAX_PAGE_SIZE, Run, run_in_project

# runs/search with `attributes.run_id IN (...)`: the parents named in one call.
PARENTS_PER_SEARCH = 100


@dataclass
class Nested:
    """One run of a family as the runs table shows it: `depth` 0 for the family's head,
    1 for a child, 2 for a grandchild...; `children`: how many runs of the page are nested
    under it (at any depth); `orphan_of`: the parent's id when the run is a child whose
    parent is not on this page (the page says "child of …")."""

    run: Run
    depth: int = 0
    children: int = 0
    orphan_of: str = ""


def families(runs: list[Run]) -> list[list[Nested]]:
    """Group a page of runs by parent, keeping the page's order: each family is its head
    (a run without a parent on the page) followed by its descendants depth first, each
    generation in the page's order. A cycle of parent tags (MLflow does not forbid one)
    is broken where it is first met; every run appears exactly once."""
    on_page = {run.run_id: run for run in runs}
    kids: dict[str, list[Run]] = {}
    for run in runs:
        parent = run.parent_run_id
        if parent and parent in on_page and parent != run.run_id:
            kids.setdefault(parent, []).append(run)
    placed: set[str] = set()

    def collect(head: Run) -> list[Nested]:
        # Depth first without recursion: a page may hold a chain of a thousand runs.
        out: list[Nested] = []
        stack = [(head, 0)]
        while stack:
            run, depth = stack.pop()
            if run.run_id in placed:
                continue
            placed.add(run.run_id)
            out.append(Nested(run, depth))
            stack.extend((child, depth + 1) for child in reversed(kids.get(run.run_id, [])))
        for index, row in enumerate(out):
            end = index + 1
            while end < len(out) and out[end].depth > row.depth:
                end += 1
            row.children = end - index - 1
        return out

    grouped: list[list[Nested]] = []
    heads = [run for run in runs if not (run.parent_run_id in on_page and run.parent_run_id != run.run_id)]
    # Runs that are only in a cycle have no head: the first one met heads its family.
    for run in heads + runs:
        if run.run_id in placed:
            continue
        family = collect(run)
        if run.parent_run_id and run.parent_run_id not in on_page:
            family[0].orphan_of = run.parent_run_id
        grouped.append(family)
    return grouped


def parent_names(project: Project, run_ids: list[str]) -> dict[str, str]:
    """Display names of the runs `run_ids` that are in `project`'s experiment (deleted ones
    included), by id; ids of other experiments or none are left out. One runs/search per
    PARENTS_PER_SEARCH ids. Raises MlflowUnavailable when MLflow is down."""
    names: dict[str, str] = {}
    ids = sorted({run_id for run_id in run_ids if _plain_id(run_id)})
    for start in range(0, len(ids), PARENTS_PER_SEARCH):
        chunk = ids[start : start + PARENTS_PER_SEARCH]
        quoted = ",".join(f"'{run_id}'" for run_id in chunk)
        raw, _ = gateway().search_runs(
            [project.mlflow_experiment_id],
            f"attributes.run_id IN ({quoted})",
            max_results=len(chunk),
            run_view_type="ALL",
        )
        for found in map(Run.from_mlflow, raw):
            if run_in_project(project, found.experiment_id):
                names[found.run_id] = found.display_name
    return names


def children_of(project: Project, run: Run) -> list[Run]:
    """The active runs of `project`'s experiment nested directly under `run` (tag
    `mlflow.parentRunId` = its id), oldest first, at most MAX_PAGE_SIZE (1,000).
    Raises MlflowUnavailable when MLflow is down, MlflowError when it refuses."""
    if not _plain_id(run.run_id):
        return []
    raw, _ = gateway().search_runs(
        [project.mlflow_experiment_id],
        f"tags.mlflow.parentRunId = '{run.run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=MAX_PAGE_SIZE,
    )
    found = [child for child in map(Run.from_mlflow, raw) if run_in_project(project, child.experiment_id)]
    return sorted(found, key=lambda child: (child.start_time or 0, child.run_id))


def _plain_id(run_id: str) -> bool:
    # Ids go inside a quoted filter: only MLflow's id characters, nothing to escape.
    return bool(run_id) and len(run_id) <= 64 and all(c.isalnum() or c in "-_" for c in run_id)
