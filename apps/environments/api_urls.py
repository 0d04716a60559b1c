"""API routes of apps.environments, mounted under /api/v1/ by portal/urls.py.

ROUTES: (prefix, viewset, basename) for the router; PATHS: extra path() entries."""

from typing import Any

from django.urls import URLPattern

from apps.environments import api

ROUTES: list[tuple[str, Any, str]] = [("environments", api.EnvironmentViewSet, "environment")]
PATHS: list[URLPattern] = []
