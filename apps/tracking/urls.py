"""Pages of apps.tracking (namespace "tracking"). API routes live in api_urls.py."""

from django.urls import path

from apps.tracking import views

app_name = "tracking"
urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    # Before the project patterns: "compare" is one segment, a project's runs page two.
    path("compare/", views.CompareView.as_view(), name="compare"),
    path("<slug:team>/<slug:slug>/", views.RunsView.as_view(), name="runs"),
    path("<slug:team>/<slug:slug>/<str:run_id>/", views.RunView.as_view(), name="run"),
    path(
        "<slug:team>/<slug:slug>/<str:run_id>/artifacts/<path:path>",
        views.ArtifactView.as_view(),
        name="artifact",
    ),
]
