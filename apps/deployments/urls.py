"""Pages of apps.deployments (namespace "deployments", mounted at /deployments/). API routes
live in api_urls.py; the inference gateway in serve_urls.py (mounted at /serve/)."""

from django.urls import path

from apps.deployments import views

app_name = "deployments"
urlpatterns = [
    path("", views.DeploymentListView.as_view(), name="list"),
    path("projects/<slug:team>/<slug:slug>/", views.ProjectDeploymentsView.as_view(), name="project"),
    path("projects/<slug:team>/<slug:slug>/new/", views.DeploymentCreateView.as_view(), name="create"),
    path("<int:pk>/", views.DeploymentDetailView.as_view(), name="detail"),
    path("<int:pk>/edit/", views.DeploymentEditView.as_view(), name="edit"),
    path("<int:pk>/delete/", views.DeploymentDeleteView.as_view(), name="delete"),
    path("<int:pk>/rollback/", views.DeploymentRollbackView.as_view(), name="rollback"),
    path("<int:pk>/try/", views.DeploymentTryView.as_view(), name="try"),
    path("<int:pk>/keys/", views.ServingKeyCreateView.as_view(), name="key-create"),
    path("<int:pk>/keys/<int:key>/revoke/", views.ServingKeyRevokeView.as_view(), name="key-revoke"),
]
