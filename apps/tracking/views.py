"""Run pages: the project picker, a project's runs table, one run, an artifact download,
and the compare view. MLflow down is a banner (503), never a 500; a bad filter is an
inline error (400); runs and projects out of reach are 404s (apps.tracking.lookups)."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views import View

from apps.access.lookups import get_project_by_slug_for_user
from apps.access.roles import Action
from apps.core.errors import InvalidInput
from apps.core.filters import errors_text
from apps.core.pages import error_response
from apps.core.partials import fragment_for, render_fragment
from apps.projects.models import Project
from apps.tracking import charts
from apps.tracking.compare import Comparison, build_comparison, comparison_csv, parse_compare_query
from apps.tracking.forms import MAX_FILTER, AnalysisQuery, RunQuery, clean_artifact_path, parse_run_query
from apps.tracking.gateway import MlflowError, MlflowUnavailable, gateway
from apps.tracking.keys import ExperimentKeys, experiment_keys
from apps.tracking.lookups import get_run_in_project
from apps.tracking.nesting import children_of, families, parent_names
from apps.tracking.runs import DEFAULT_PAGE_SIZE, Run, RunPage, search_project_runs
from apps.tracking.series import histories

logger = logging.getLogger(__name__)

DEFAULT_COLUMNS = 5  # params and metrics shown until the user picks columns
# MLflow statuses as the portal's status badges (apps' CSS classes) show them.
STATUS_CLASS = {
    "RUNNING": "running",
    "SCHEDULED": "pending",
    "FINISHED": "succeeded",
    "FAILED": "failed",
    "KILLED": "cancelled",
}
# Served as downloads, never rendered on the portal's origin: an uploaded HTML or SVG file
# would otherwise run its scripts with the user's session.
INLINE_UNSAFE = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml")


def _quoted(key: str) -> str:
    """A param or metric name as MLflow's order_by wants it (backticks around odd names)."""
    return key if key.replace("_", "a").isalnum() else f"`{key}`"


def _columns(query: RunQuery, page: RunPage | None) -> tuple[list[str], list[str]]:
    params = query.params if query.params is not None else (page.param_keys[:DEFAULT_COLUMNS] if page else [])
    metrics = query.metrics if query.metrics is not None else (page.metric_keys[:DEFAULT_COLUMNS] if page else [])
    return params, metrics


def _sort_links(query: RunQuery, params: list[str], metrics: list[str]) -> dict[str, Any]:
    """Per column: the order_by a click on its header asks for, and the current arrow."""
    current = query.order_by[0] if query.order_by else "attributes.start_time DESC"

    def link(label: str, key: str) -> dict[str, str]:
        descending = current == f"{key} DESC"
        ascending = current in (f"{key} ASC", key)
        return {
            "label": label,
            "order_by": f"{key} ASC" if descending else f"{key} DESC",
            "arrow": "↓" if descending else ("↑" if ascending else ""),
        }

    return {
        "name": link("Run", "attributes.run_name"),
        "status": link("Status", "attributes.status"),
        "start": link("Started", "attributes.start_time"),
        "params": [link(k, f"params.{_quoted(k)}") for k in params],
        "metrics": [link(k, f"metrics.{_quoted(k)}") for k in metrics],
    }


class IndexView(LoginRequiredMixin, View):
    """Pick a project to see its runs (only projects you can see)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        projects = Project.objects.for_user(request.user).select_related("team").order_by("team__slug", "slug")
        return render(request, "tracking/index.html", {"projects": projects})


class RunsView(LoginRequiredMixin, View):
    """Every run of a project's experiment, also runs logged outside Plinth."""

    def get(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        project = get_project_by_slug_for_user(request.user, team, slug, Action.VIEW)
        context: dict[str, Any] = {"project": project, "error": "", "mlflow_down": ""}
        status = 200
        page: RunPage | None = None
        try:
            query = parse_run_query(request.GET)
        except InvalidInput as exc:
            query = RunQuery(request.GET.get("filter", "")[:MAX_FILTER], [], "", DEFAULT_PAGE_SIZE, None, None)
            context["error"], status = exc.message, 400
        if project.mlflow_experiment_id and status == 200:
            try:
                page = search_project_runs(
                    project,
                    filter_string=query.filter,
                    order_by=query.order_by,
                    page_token=query.page_token,
                    max_results=query.max_results,
                )
            except MlflowUnavailable as exc:
                context["mlflow_down"], status = exc.message, 503
            except MlflowError as exc:
                context["error"], status = exc.message, 400
        params, metrics = _columns(query, page)
        # The picker offers every key of the experiment, not just this page's (cached scan).
        keys = experiment_keys(project, page.runs) if page else ExperimentKeys([], [], [])
        grouped = families(page.runs) if page else []
        orphans = [family[0].orphan_of for family in grouped if family[0].orphan_of]
        try:
            orphan_names = parent_names(project, orphans) if orphans else {}
        except (MlflowError, MlflowUnavailable):
            orphan_names = {}
        context.update(
            query=query,
            page=page,
            rows=[
                (
                    row.run,
                    STATUS_CLASS.get(row.run.status, ""),
                    [row.run.params.get(k) for k in params],
                    [row.run.metrics.get(k) for k in metrics],
                )
                for family in grouped
                for row in family
            ],
            families=[
                [
                    {
                        "row": row,
                        "css": STATUS_CLASS.get(row.run.status, ""),
                        "pvalues": [row.run.params.get(k) for k in params],
                        "mvalues": [row.run.metrics.get(k) for k in metrics],
                        "indent": row.depth * 18,
                        "parent_name": orphan_names.get(row.orphan_of, "") if row.orphan_of else "",
                    }
                    for row in family
                ]
                for family in grouped
            ],
            page_sizes=sorted({25, 50, 100, 200, 500, query.max_results}),
            params=params,
            metrics=metrics,
            sort=_sort_links(query, params, metrics),
            all_params=sorted({*keys.params, *params}),
            all_metrics=sorted({*keys.metrics, *metrics}),
            mlflow_url=gateway().experiment_url(project.mlflow_experiment_id) if project.mlflow_experiment_id else "",
        )
        # A deleted experiment: say so and how to fix it, never "log to <name>" (a new
        # experiment of that name would hold runs this page never shows).
        from apps.projects.views import experiment_context

        context.update(experiment_context(request, project, live=not context["mlflow_down"]))
        return render(request, "tracking/runs.html", context, status=status)


class RunView(LoginRequiredMixin, View):
    """One run: params, latest metrics with their histories, tags, artifacts."""

    def get(self, request: HttpRequest, team: str, slug: str, run_id: str) -> HttpResponse:
        project = get_project_by_slug_for_user(request.user, team, slug, Action.VIEW)
        path = clean_artifact_path(request.GET.get("path", ""), allow_root=True)
        context: dict[str, Any] = {"project": project, "run_id": run_id, "path": path}
        try:
            run = get_run_in_project(project, run_id)
        except MlflowUnavailable as exc:
            context["mlflow_down"] = exc.message
            return render(request, "tracking/run.html", context, status=503)
        keys = sorted(run.latest)
        context.update(
            run=run,
            metric_keys=keys,
            latest_rows=[(key, run.latest[key]) for key in keys],
            status_css=STATUS_CLASS.get(run.status, ""),
        )
        context["mlflow_url"] = gateway().run_url(run.experiment_id, run.run_id)
        try:
            found = histories([run], keys)
            context["charts"] = charts.line_charts([run], keys, lambda r, k: found.series.get((r, k)), prefix="metric")
            context["chart_errors"] = sorted(found.errors.values())
        except MlflowUnavailable as exc:
            context["mlflow_down"] = exc.message
        try:
            context["artifacts"] = gateway().list_artifacts(run.run_id, path)
        except (MlflowError, MlflowUnavailable) as exc:
            context["artifacts_error"] = exc.message
        context["parent"] = path.rpartition("/")[0] if path else None
        context["system_tags"] = {k: v for k, v in sorted(run.tags.items()) if k.startswith("mlflow.")}
        context["user_tags"] = {k: v for k, v in sorted(run.tags.items()) if not k.startswith("mlflow.")}
        context.update(_family(project, run))
        context.update(_registered(request.user, project, run))
        return render(request, "tracking/run.html", context, status=503 if context.get("mlflow_down") else 200)


def _registered(user: Any, project: Project, run: Run) -> dict[str, Any]:
    """The run page's registered versions: the model versions MLflow registered from this run
    ({"name", "version", "aliases"}, newest first), whether `user` may ask to promote them,
    and MLflow's refusal or absence as a message in the section (never a failed page)."""
    from apps.registry.mlflow import registry
    from apps.registry.policies import can_request_promotion

    found: dict[str, Any] = {"registered_versions": [], "registered_error": ""}
    try:
        rows = registry().versions_of_runs([run.run_id])
    except (MlflowError, MlflowUnavailable) as exc:
        found["registered_error"] = exc.message
        return found
    found["registered_versions"] = sorted(
        (
            {"name": row.get("name", ""), "version": int(row.get("version", 0)), "aliases": row.get("aliases") or []}
            for row in rows
            if row.get("name") and str(row.get("version", "")).isdigit()
        ),
        key=lambda v: (v["name"], -v["version"]),
    )
    found["can_request"] = can_request_promotion(user, project)
    return found


def _family(project: Project, run: Run) -> dict[str, Any]:
    """The run page's nested-runs parts: its parent (id and name, when it has one) and its
    direct children with their status and first DEFAULT_COLUMNS metrics. MLflow failing
    here is a message in the section, not a failed page."""
    found: dict[str, Any] = {"child_runs": [], "child_metrics": [], "children_error": "", "parent_run": None}
    try:
        if run.parent_run_id:
            names = parent_names(project, [run.parent_run_id])
            found["parent_run"] = {"run_id": run.parent_run_id, "name": names.get(run.parent_run_id, "")}
        children = children_of(project, run)
    except (MlflowError, MlflowUnavailable) as exc:
        found["children_error"] = exc.message
        return found
    metrics = sorted({key for child in children for key in child.latest})[:DEFAULT_COLUMNS]
    found["child_metrics"] = metrics
    found["child_runs"] = [
        (child, STATUS_CLASS.get(child.status, ""), [child.metrics.get(k) for k in metrics]) for child in children
    ]
    found["child_ids"] = ",".join(child.run_id for child in children)
    return found


class ArtifactView(LoginRequiredMixin, View):
    """Download one artifact through the portal: access first, then the path rule (400),
    then MLflow (404 when there is no such file)."""

    def get(self, request: HttpRequest, team: str, slug: str, run_id: str, path: str) -> HttpResponseBase:
        project = get_project_by_slug_for_user(request.user, team, slug, Action.VIEW)
        path = clean_artifact_path(path)
        run = get_run_in_project(project, run_id)
        try:
            upstream = gateway().open_artifact(run.run_id, path)
        except MlflowError:
            raise Http404("No such artifact.") from None

        def chunks() -> Iterator[bytes]:
            try:
                yield from upstream.iter_content(chunk_size=64 * 1024)
            finally:
                upstream.close()

        name = path.rpartition("/")[2]
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = StreamingHttpResponse(
            chunks(), content_type="application/octet-stream" if kind in INLINE_UNSAFE else kind
        )
        response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
        if upstream.headers.get("Content-Length"):
            response["Content-Length"] = upstream.headers["Content-Length"]
        response["X-Content-Type-Options"] = "nosniff"
        return response


def _flipped(directions: dict[str, str], key: str, current: str) -> str:
    """The `dir` query value that switches `key` to the other direction, keeping the rest."""
    switched = {**directions, key: "max" if current == "min" else "min"}
    return ",".join(f"{k}:{d}" for k, d in switched.items())


def _analysis(choice: AnalysisQuery, comparison: Comparison) -> dict[str, Any]:
    """The parallel-coordinates and scatter figures for the metric and param chosen in a
    valid `choice` (defaults where it leaves one empty)."""
    varying = comparison.differing_params or comparison.param_keys
    metric, x, y = choice.chosen(varying)
    return {
        "pc_metric": metric,
        "sx": x,
        "sy": y,
        "parcoords": charts.parallel_coordinates(comparison.runs, varying[:12], metric, comparison.direction(metric))
        if metric
        else None,
        "scatter": charts.scatter(comparison.runs, x, y) if x and y else None,
    }


class CompareView(LoginRequiredMixin, View):
    """Runs side by side; the URL (run ids in the query) is the thing to share."""

    template_name = "tracking/compare.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        context: dict[str, Any] = {"error": "", "mlflow_down": ""}
        try:
            query = parse_compare_query(request.GET)
        except InvalidInput as exc:
            context["error"] = exc.message
            return render(request, self.template_name, context, status=400)
        context["query"] = query
        if not query.run_ids:
            return render(request, self.template_name, context)
        analysis = fragment_for(request, ("analysis",))  # the analysis form swaps #analysis
        as_csv = request.GET.get("format") == "csv"
        try:
            comparison = build_comparison(request.user, query, with_series=not (as_csv or analysis))
        except MlflowUnavailable as exc:
            context["mlflow_down"] = exc.message
            return render(request, self.template_name, context, status=503)
        choice = AnalysisQuery(request.GET, metrics=comparison.metric_keys, params=comparison.param_keys)
        if not choice.is_valid():
            return error_response(request, 400, errors_text(choice))
        if as_csv:
            response = HttpResponse(comparison_csv(comparison), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = 'attachment; filename="runs.csv"'
            return response
        context.update(comparison=comparison, **_analysis(choice, comparison))
        if analysis:
            return render_fragment(request, self.template_name, "analysis", context)
        best = comparison.best
        differing = set(comparison.differing_params)
        context.update(
            best=best,
            rows=[
                (
                    run,
                    STATUS_CLASS.get(run.status, ""),
                    [(key, comparison.summary(run, key), best.get(key)) for key in comparison.metric_keys],
                )
                for run in comparison.runs
            ],
            params_rows=[
                (key, [run.params.get(key) for run in comparison.runs], key not in differing)
                for key in comparison.param_keys
            ],
            charts=charts.line_charts(comparison.runs, comparison.metric_keys, comparison.series_of),
            metric_headers=[
                (key, comparison.direction(key), _flipped(query.directions, key, comparison.direction(key)))
                for key in comparison.metric_keys
            ],
            visible_traces=charts.VISIBLE_TRACES,
            run_ids=",".join(run.run_id for run in comparison.runs),
        )
        if comparison.series is not None:
            logger.info(
                "compare: %d runs, %d metrics, %d series cached, %d computed",
                len(comparison.runs),
                len(comparison.metric_keys),
                comparison.series.cached,
                comparison.series.computed,
            )
        return render(request, self.template_name, context)
