"""API routes of apps.gpus, mounted under /api/v1/ by portal/urls.py.

ROUTES: (prefix, viewset, basename) for the router; PATHS: extra path() entries."""

from typing import Any

from django.urls import URLPattern, path

from apps.gpus.api import GpuViewSet, UsageView

ROUTES: list[tuple[str, Any, str]] = [("gpus", GpuViewSet, "gpu")]
# Before the router's routes in portal/urls.py, so "gpus/usage/" is never read as a GPU.
PATHS: list[URLPattern] = [path("gpus/usage/", UsageView.as_view(), name="gpu-usage")]
