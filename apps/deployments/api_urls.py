"""API routes of apps.deployments, mounted under /api/v1/ by portal/urls.py.

ROUTES: (prefix, viewset, basename) for the router; PATHS: extra path() entries."""

from typing import Any

from django.urls import URLPattern

from apps.deployments import api

ROUTES: list[tuple[str, Any, str]] = [("deployments", api.DeploymentViewSet, "deployment")]
PATHS: list[URLPattern] = []
