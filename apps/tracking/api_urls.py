"""API routes of apps.tracking, mounted under /api/v1/ by portal/urls.py.

ROUTES: (prefix, viewset, basename) for the router; PATHS: extra path() entries."""

from typing import Any

from django.urls import URLPattern, path

from apps.tracking import api

ROUTES: list[tuple[str, Any, str]] = []
PATHS: list[URLPattern] = [
    path("runs/", api.RunListView.as_view(), name="run-list"),
    path("runs/compare/", api.RunCompareView.as_view(), name="run-compare"),
]
