"""Pages of apps.registry (namespace "registry", mounted at /models/). API routes live in api_urls.py."""

from django.urls import path

from apps.registry import views, views_requests

app_name = "registry"
urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    path("approvals/", views_requests.InboxView.as_view(), name="inbox"),
    path("projects/<slug:team>/<slug:slug>/", views.ProjectModelsView.as_view(), name="project"),
    path("projects/<slug:team>/<slug:slug>/attach/", views.AttachView.as_view(), name="attach"),
    path("projects/<slug:team>/<slug:slug>/policy/", views.PolicyView.as_view(), name="policy"),
    path("teams/<slug:slug>/webhook/", views.WebhookView.as_view(), name="webhook"),
    path("registered/<str:name>/", views.ModelDetailView.as_view(), name="model"),
    path("registered/<str:name>/promote/", views_requests.RequestCreateView.as_view(), name="request-create"),
    path("registered/<str:name>/rollback/", views.RollbackView.as_view(), name="rollback"),
    path("requests/<int:pk>/", views_requests.RequestDetailView.as_view(), name="request"),
    path(
        "requests/<int:pk>/approve/",
        views_requests.DecisionView.as_view(decision="approve"),
        name="request-approve",
    ),
    path("requests/<int:pk>/reject/", views_requests.DecisionView.as_view(decision="reject"), name="request-reject"),
    path(
        "requests/<int:pk>/withdraw/",
        views_requests.DecisionView.as_view(decision="withdraw"),
        name="request-withdraw",
    ),
]
