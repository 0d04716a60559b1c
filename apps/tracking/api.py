"""API: GET /api/v1/runs/ (a project's runs) and GET /api/v1/runs/compare/ (runs side by
side with downsampled metric histories), per API.md."""

from __future__ import annotations

import logging

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.access.roles import Action
from apps.core.api import int_schema
from apps.core.errors import InvalidInput
from apps.launches.lookups import project_from
from apps.tracking.compare import build_comparison, comparison_json, parse_compare_query
from apps.tracking.downsample import MIN_POINTS
from apps.tracking.forms import parse_run_query
from apps.tracking.gateway import MlflowError
from apps.tracking.runs import MAX_PAGE_SIZE, search_project_runs
from apps.tracking.series import MAX_MAX_POINTS

logger = logging.getLogger(__name__)
API_PAGE_SIZE = 100


class RunListView(APIView):
    """Runs of a project's MLflow experiment (also those logged outside Plinth), one page
    at a time: `next_page_token` is "" on the last page. A bad filter is a 400 with
    MLflow's message."""

    depends_on = ("MLflow",)  # the schema's 503 (apps.core.schema)

    @extend_schema(
        parameters=[
            OpenApiParameter("project", str, required=True, description="project id or team/project"),
            OpenApiParameter("filter", str, description="MLflow search filter, e.g. metrics.loss < 0.5"),
            OpenApiParameter("order_by", str, many=True, description="e.g. metrics.loss ASC (repeatable)"),
            OpenApiParameter("page_token", str, description="next_page_token of the previous page, as given"),
            OpenApiParameter("max_results", int_schema(1, MAX_PAGE_SIZE), description="1..1000, default 100"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        if not request.query_params.get("project"):
            raise InvalidInput.field("project", "Name the project by id or as team/project.")
        project = project_from(request.user, request.query_params["project"], Action.VIEW)
        query = parse_run_query(request.query_params, default_size=API_PAGE_SIZE)
        if not project.mlflow_experiment_id:
            return Response({"runs": [], "next_page_token": ""})
        try:
            page = search_project_runs(
                project,
                filter_string=query.filter,
                order_by=query.order_by,
                page_token=query.page_token,
                max_results=query.max_results,
            )
        except MlflowError as exc:
            field = "filter" if query.filter else ("order_by" if query.order_by else "page_token")
            raise InvalidInput(exc.message, fields={field: [exc.message]}) from exc
        return Response({"runs": [run.as_api() for run in page.runs], "next_page_token": page.next_page_token})


class RunCompareView(APIView):
    """Runs side by side: params, summary metrics (last, min, max), the best run per metric
    (min for loss-like names, else max; `dir=metric:min` switches) and each metric's
    history per run, downsampled to at most `max_points` points keeping first, last, min
    and max. Every run must belong to a project you can see (404 otherwise); deleted runs
    are listed under `missing`."""

    depends_on = ("MLflow",)

    @extend_schema(
        parameters=[
            OpenApiParameter("run_ids", str, required=True, description="comma-separated run ids"),
            OpenApiParameter("metrics", str, description="comma-separated metric names (default: all)"),
            OpenApiParameter(
                "max_points", int_schema(MIN_POINTS, MAX_MAX_POINTS), description="4..10000, default 1000"
            ),
            OpenApiParameter("dir", str, description="direction overrides, e.g. loss:max,acc:min"),
            OpenApiParameter(
                "refresh", str, enum=["0", "1"], description="1: re-read every history from MLflow, not the cache"
            ),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> HttpResponse:
        query = parse_compare_query(request.query_params)
        if not query.run_ids:
            raise InvalidInput.field("run_ids", "Name at least one run.")
        comparison = build_comparison(request.user, query)
        if comparison.series is not None:
            logger.info(
                "api compare: %d runs, %d metrics, %d series cached, %d computed",
                len(comparison.runs),
                len(comparison.metric_keys),
                comparison.series.cached,
                comparison.series.computed,
            )
        return HttpResponse(comparison_json(comparison), content_type="application/json")
