"""API routes of apps.registry, mounted under /api/v1/ by portal/urls.py.

ROUTES: (prefix, viewset, basename) for the router; PATHS: extra path() entries."""

from typing import Any

from django.urls import URLPattern, path

from apps.registry import api

ROUTES: list[tuple[str, Any, str]] = [("promotions", api.PromotionViewSet, "promotion")]
PATHS: list[URLPattern] = [
    path("models/", api.ModelListView.as_view(), name="registered-model-list"),
    path("models/<str:name>/", api.ModelDetailView.as_view(), name="registered-model-detail"),
    path("models/<str:name>/aliases/history/", api.AliasHistoryView.as_view(), name="alias-history"),
    path("models/<str:name>/aliases/<str:alias>/rollback/", api.AliasRollbackView.as_view(), name="alias-rollback"),
    path("projects/<int:pk>/promotion-policy/", api.PolicyView.as_view(), name="promotion-policy"),
]
