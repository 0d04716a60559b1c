"""The admin console (namespace "console", mounted at /console/)."""

from django.urls import path

from apps.console import views

app_name = "console"
urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    path("users/", views.UserListView.as_view(), name="user-list"),
    path("users/new/", views.UserCreateView.as_view(), name="user-create"),
    path("users/<str:username>/", views.UserDetailView.as_view(), name="user-detail"),
    path("users/<str:username>/deactivate/", views.UserActiveView.as_view(), name="user-deactivate"),
    path("users/<str:username>/reactivate/", views.UserActiveView.as_view(activate=True), name="user-reactivate"),
    path("users/<str:username>/unlock/", views.UserUnlockView.as_view(), name="user-unlock"),
    path("tokens/<int:pk>/revoke/", views.TokenRevokeView.as_view(), name="token-revoke"),
    path("teams/", views.TeamListView.as_view(), name="team-list"),
    path("teams/<slug:slug>/", views.TeamDetailView.as_view(), name="team-detail"),
    path("teams/<slug:slug>/budget/", views.TeamBudgetView.as_view(), name="team-budget"),
    path("teams/<slug:slug>/sso/", views.SsoMappingAddView.as_view(), name="sso-add"),
    path("teams/<slug:slug>/sso/<int:pk>/delete/", views.SsoMappingDeleteView.as_view(), name="sso-delete"),
    path("projects/", views.ProjectListView.as_view(), name="project-list"),
    path("projects/<slug:team>/<slug:slug>/", views.ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<slug:team>/<slug:slug>/sync/", views.ProjectSyncView.as_view(), name="project-sync"),
    path("templates/", views.TemplateListView.as_view(), name="template-list"),
    path("templates/new/", views.TemplateCreateView.as_view(), name="template-create"),
    path("templates/<int:pk>/", views.TemplateEditView.as_view(), name="template-edit"),
]
