from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from apps.accounts import api as accounts_api
from apps.accounts import views as accounts_views
from apps.audit import api as audit_api
from apps.audit import views as audit_views
from apps.core import views as core_views
from apps.deployments import api_urls as deployments_api_urls
from apps.environments import api_urls as environments_api_urls
from apps.gpus import api_urls as gpus_api_urls
from apps.launches import api as launches_api
from apps.launches import views as launches_views
from apps.projects import api as projects_api
from apps.projects import views as projects_views
from apps.registry import api_urls as registry_api_urls
from apps.tracking import api_urls as tracking_api_urls

router = SimpleRouter()
router.register("teams", accounts_api.TeamViewSet, basename="team")
router.register(r"teams/(?P<team_slug>[a-z0-9-]+)/members", accounts_api.MemberViewSet, basename="member")
router.register("projects", projects_api.ProjectViewSet, basename="project")
router.register("audit", audit_api.AuditEventViewSet, basename="audit")
router.register("templates", launches_api.TemplateViewSet, basename="template")
router.register("launches", launches_api.LaunchViewSet, basename="launch")
router.register("sweeps", launches_api.SweepViewSet, basename="sweep")
# Each later app mounts its own API routes (apps/<app>/api_urls.py) and pages (apps/<app>/urls.py).
APP_APIS = [tracking_api_urls, registry_api_urls, gpus_api_urls, deployments_api_urls, environments_api_urls]
for app_api in APP_APIS:
    for prefix, viewset, basename in app_api.ROUTES:
        router.register(prefix, viewset, basename=basename)

api_patterns = [
    path("auth/token/", accounts_api.AuthTokenView.as_view(), name="auth-token"),
    path("me/", accounts_api.MeView.as_view(), name="me"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up code as a script of its own (no inline
    # script: the site's Content-Security-Policy allows none).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    *(p for app_api in APP_APIS for p in app_api.PATHS),
    *router.urls,
]

team_patterns = [
    path("", accounts_views.TeamListView.as_view(), name="list"),
    path("new/", accounts_views.TeamCreateView.as_view(), name="create"),
    path("<slug:slug>/", accounts_views.TeamDetailView.as_view(), name="detail"),
    path("<slug:slug>/members/", accounts_views.MemberAddView.as_view(), name="member-add"),
    path("<slug:slug>/members/<str:username>/role/", accounts_views.MemberChangeView.as_view(), name="member-role"),
    path(
        "<slug:slug>/members/<str:username>/remove/",
        accounts_views.MemberChangeView.as_view(remove=True),
        name="member-remove",
    ),
]

project_patterns = [
    path("", projects_views.ProjectListView.as_view(), name="list"),
    path("new/", projects_views.ProjectCreateView.as_view(), name="create"),
    path("<slug:team>/<slug:slug>/", projects_views.ProjectDetailView.as_view(), name="detail"),
    path("<slug:team>/<slug:slug>/edit/", projects_views.ProjectEditView.as_view(), name="edit"),
    path("<slug:team>/<slug:slug>/access/", projects_views.ProjectAccessView.as_view(), name="access-sync"),
    path(
        "<slug:team>/<slug:slug>/attach-experiment/",
        projects_views.ExperimentAttachView.as_view(),
        name="attach-experiment",
    ),
    path(
        "<slug:team>/<slug:slug>/restore-experiment/",
        projects_views.ExperimentRestoreView.as_view(),
        name="restore-experiment",
    ),
    path(
        "<slug:team>/<slug:slug>/replace-experiment/",
        projects_views.ExperimentReplaceView.as_view(),
        name="replace-experiment",
    ),
]

launch_patterns = [
    path("", launches_views.LaunchListView.as_view(), name="list"),
    path("new/", launches_views.LaunchCreateView.as_view(), name="create"),
    path("<int:pk>/", launches_views.LaunchDetailView.as_view(), name="detail"),
    path("<int:pk>/cancel/", launches_views.LaunchCancelView.as_view(), name="cancel"),
    path("sweeps/", launches_views.SweepListView.as_view(), name="sweep-list"),
    path("sweeps/new/", launches_views.SweepCreateView.as_view(), name="sweep-create"),
    path("sweeps/<int:pk>/", launches_views.SweepDetailView.as_view(), name="sweep-detail"),
    path("sweeps/<int:pk>/cancel/", launches_views.SweepCancelView.as_view(), name="sweep-cancel"),
    path("sweeps/<int:pk>/extend/", launches_views.SweepExtendView.as_view(), name="sweep-extend"),
]

urlpatterns = [
    path("", accounts_views.HomeView.as_view(), name="home"),
    path("login/", accounts_views.PlinthLoginView.as_view(), name="login"),
    path("logout/", accounts_views.PlinthLogoutView.as_view(), name="logout"),
    path("account/", accounts_views.AccountView.as_view(), name="account"),
    path("account/time-zone/", accounts_views.AccountTimeZoneView.as_view(), name="account-time-zone"),
    path("account/tokens/<int:pk>/revoke/", accounts_views.TokenRevokeView.as_view(), name="token-revoke"),
    path("teams/", include((team_patterns, "teams"))),
    path("projects/", include((project_patterns, "projects"))),
    path("launches/", include((launch_patterns, "launches"))),
    path("runs/", include("apps.tracking.urls")),
    path("models/", include("apps.registry.urls")),
    path("gpus/", include("apps.gpus.urls")),
    path("deployments/", include("apps.deployments.urls")),
    path("environments/", include("apps.environments.urls")),
    # The inference gateway: POST serve/<team>/<project>/<deployment>/invocations
    path("serve/", include("apps.deployments.serve_urls")),
    path("audit/", audit_views.AuditListView.as_view(), name="audit"),
    path("audit/export.csv", audit_views.AuditExportView.as_view(), name="audit-export"),
    path("console/", include("apps.console.urls")),
    path("status/", core_views.SystemStatusView.as_view(), name="status"),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("api/v1/", include((api_patterns, "api"))),
    path("admin/", admin.site.urls),
]
if settings.PLINTH_OIDC_ENABLED:
    # SSO: /oidc/authenticate/ (the login page's button), /oidc/callback/, /oidc/logout/.
    # Mounted only when configured, so the authorization matrix of the default (local
    # accounts) setup has no routes that cannot work.
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))

# Errors outside a view's own handling: JSON under /api/ like every other API error; pages
# get the error page (the layout, the reason, a way back).
handler400 = "apps.core.views.bad_request"
handler403 = "apps.core.views.permission_denied"
handler404 = "apps.core.views.page_not_found"
handler500 = "apps.core.views.server_error"
