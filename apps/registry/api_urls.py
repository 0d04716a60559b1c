"""API routes of apps.registry, mounted under /api/v1/ by portal/urls.py.

ROUTES: (prefix, viewset, basename) for the router; PATHS: extra path() entries."""

from typing import Any

from django.urls import URLPattern

ROUTES: list[tuple[str, Any, str]] = []
PATHS: list[URLPattern] = []
