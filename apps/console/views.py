"""The admin console: Plinth's own pages for platform admins, and the part of them about
their teams for leads. Every change goes through a service (accounts, projects, launches'
templates), so the rules, the audit events and the sync to the cluster and MLflow are the
same as everywhere else; every object is found through apps.access (404 invisible, 403 not
allowed)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views import View
from django.views.generic import TemplateView

from apps.access import policies
from apps.access.lookups import (
    get_api_token_for_user,
    get_project_by_slug_for_user,
    get_sso_mapping_for_user,
    get_team_for_user,
    get_template_for_user,
    get_user_for_user,
)
from apps.access.mixins import PlatformAdminMixin, PolicyRequiredMixin
from apps.access.policies import actor_of
from apps.access.roles import Action, Role
from apps.accounts import ratelimit
from apps.accounts import services as account_services
from apps.accounts.models import ApiToken, SsoGroupMapping, Team
from apps.console import selectors
from apps.console.filters import UserFilter
from apps.console.forms import BudgetForm, SsoMappingForm, TemplateForm, UserCreateForm
from apps.console.models import SyncState, SyncTarget
from apps.console.scheduling import cluster_sync_enabled, mlflow_sync_enabled
from apps.core.filters import FilteredListMixin
from apps.core.pages import paginate, run_action, run_service
from apps.launches import services as launch_services
from apps.launches.models import Template
from apps.projects.models import Project


class ConsoleMixin(PolicyRequiredMixin):
    """Console pages: platform admins and leads (403 for everyone else signed in). The
    pages about accounts are PlatformAdminMixin's."""

    policy = staticmethod(policies.can_use_console)
    denied = "The console is for team leads and platform admins."


def _reverse_or_empty(name: str, **kwargs: Any) -> str:
    """A link to another app's page, or "" while that page does not exist."""
    try:
        return reverse(name, kwargs=kwargs or None)
    except NoReverseMatch:
        return ""


class IndexView(ConsoleMixin, TemplateView):
    template_name = "console/index.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        context.update(
            is_admin=policies.is_platform_admin(user),
            n_users=selectors.console_users(user).count(),
            n_teams=Team.objects.for_user(user, Action.MANAGE).count(),
            n_projects=Project.objects.for_user(user, Action.MANAGE).count(),
            n_templates=selectors.console_templates(user).count(),
            approvals_url=_reverse_or_empty("registry:inbox"),
            cluster_sync=bool(self.settings().PLINTH_KUBE_ACCESS_SYNC),
            mlflow_sync=mlflow_sync_enabled(),
            oidc=bool(self.settings().PLINTH_OIDC_ENABLED),
        )
        return context

    @staticmethod
    def settings() -> Any:
        from django.conf import settings

        return settings


# --- users -----------------------------------------------------------------------------------
class UserListView(ConsoleMixin, FilteredListMixin, TemplateView):
    template_name = "console/users.html"
    filterset_class = UserFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        users = self.filtered(selectors.console_users(self.request.user))
        context.update(
            page=paginate(self.request, users, per_page=50),
            is_admin=policies.is_platform_admin(self.request.user),
        )
        return context


class UserCreateView(PlatformAdminMixin, View):
    template_name = "console/user_form.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": UserCreateForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = UserCreateForm(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            user, status = run_service(form, lambda: account_services.create_user(actor_of(request), **data))
            if user is not None:
                messages.success(request, f"User {user.username} created. Add them to a team to give them access.")
                return redirect("console:user-detail", username=user.username)
        return render(request, self.template_name, {"form": form}, status=status)


class UserDetailView(ConsoleMixin, TemplateView):
    """One person: every team role they hold, where it comes from, what it lets them do,
    and (for platform admins) their API tokens and account state."""

    template_name = "console/user_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        viewer = self.request.user
        person = get_user_for_user(viewer, kwargs["username"], Action.VIEW)
        is_admin = policies.is_platform_admin(viewer)
        context.update(
            person=person,
            access=selectors.user_access(person, viewer),
            is_admin=is_admin,
            tokens=list(ApiToken.objects.filter(user=person).order_by("-created_at")) if is_admin else [],
            sso_linked=person.has_sso_link,
            sign_in_failures=ratelimit.failures(person.username) if is_admin else 0,
        )
        return context


class UserActiveView(PlatformAdminMixin, View):
    """POST: deactivate (sessions and tokens end at once) or reactivate an account."""

    activate = False

    def post(self, request: HttpRequest, username: str) -> HttpResponse:
        person = get_user_for_user(request.user, username, Action.ADMIN)
        if self.activate:
            change, said = account_services.reactivate_user, "can sign in again (revoked tokens stay revoked)."
        else:
            change, said = account_services.deactivate_user, "is deactivated: their sessions and API tokens ended."
        return run_action(
            request,
            lambda: change(actor_of(request), person),
            success=f"{username} {said}",
            then=reverse("console:user-detail", kwargs={"username": username}),
        )


class UserUnlockView(PlatformAdminMixin, View):
    """POST: a platform admin lifts the sign-in locks on an account (audited)."""

    def post(self, request: HttpRequest, username: str) -> HttpResponse:
        person = get_user_for_user(request.user, username, Action.ADMIN)
        counted = account_services.unlock_sign_in(actor_of(request), person)
        messages.success(request, f"Sign-in unlocked for {username} ({counted} recent attempts forgotten).")
        return redirect("console:user-detail", username=username)


class TokenRevokeView(PlatformAdminMixin, View):
    """POST: a platform admin revokes anyone's API token."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        token = get_api_token_for_user(request.user, pk, Action.ADMIN)
        account_services.revoke_api_token(actor_of(request), token)
        messages.success(request, f"Token {token.name} of {token.user.username} revoked; it stops working now.")
        return redirect("console:user-detail", username=token.user.username)


# --- teams -----------------------------------------------------------------------------------
class TeamListView(ConsoleMixin, TemplateView):
    template_name = "console/teams.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        teams = list(selectors.console_teams(self.request.user))
        for team in teams:
            team.allocated = sum(p.gpu_quota for p in team.projects.all())  # type: ignore[attr-defined]
        context.update(teams=teams, is_admin=policies.is_platform_admin(self.request.user))
        return context


class TeamDetailView(ConsoleMixin, TemplateView):
    """Who has access to this team (and so to each of its projects), the budget, the SSO
    groups mapped to it."""

    template_name = "console/team_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        team = get_team_for_user(self.request.user, kwargs["slug"], Action.MANAGE)
        context.update(team_context(self.request, team))
        return context


def team_context(request: HttpRequest, team: Team, **extra: Any) -> dict[str, Any]:
    projects = list(team.projects.order_by("slug"))
    context = {
        "team": team,
        "access": selectors.team_access(team),
        "projects": projects,
        "allocated": sum(p.gpu_quota for p in projects),
        "mappings": list(SsoGroupMapping.objects.filter(team=team).order_by("group")),
        "is_admin": policies.is_platform_admin(request.user),
        "budget_form": BudgetForm(initial={"gpu_budget": team.gpu_budget}),
        "mapping_form": SsoMappingForm(),
        "roles": Role.choices,
    }
    context.update(extra)
    return context


class TeamBudgetView(ConsoleMixin, View):
    """POST: a platform admin sets a team's GPU budget (never below its projects' quotas)."""

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        team = get_team_for_user(request.user, slug, Action.ADMIN)
        form = BudgetForm(request.POST)
        status = 400
        if form.is_valid():
            budget = form.cleaned_data["gpu_budget"]
            updated, status = run_service(
                form, lambda: account_services.update_team(actor_of(request), team, gpu_budget=budget)
            )
            if updated is not None:
                messages.success(request, f"GPU budget of {team.slug} is now {updated.gpu_budget}.")
                return redirect("console:team-detail", slug=slug)
        context = team_context(request, team, budget_form=form)
        return render(request, TeamDetailView.template_name, context, status=status)


class SsoMappingAddView(ConsoleMixin, View):
    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        team = get_team_for_user(request.user, slug, Action.ADMIN)
        form = SsoMappingForm(request.POST)
        status = 400
        if form.is_valid():
            mapping, status = run_service(
                form, lambda: account_services.add_sso_mapping(actor_of(request), team, **form.cleaned_data)
            )
            if mapping is not None:
                messages.success(request, f"Members of {mapping.group} get {mapping.role} in {team.slug} at sign-in.")
                return redirect("console:team-detail", slug=slug)
        context = team_context(request, team, mapping_form=form)
        return render(request, TeamDetailView.template_name, context, status=status)


class SsoMappingDeleteView(ConsoleMixin, View):
    def post(self, request: HttpRequest, slug: str, pk: int) -> HttpResponse:
        team = get_team_for_user(request.user, slug, Action.ADMIN)
        mapping = get_sso_mapping_for_user(request.user, team, pk, Action.ADMIN)
        account_services.remove_sso_mapping(actor_of(request), mapping)
        messages.success(request, f"{mapping.group} no longer grants a role in {team.slug}.")
        return redirect("console:team-detail", slug=slug)


# --- projects ---------------------------------------------------------------------------------
class ProjectListView(ConsoleMixin, TemplateView):
    template_name = "console/projects.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        page = paginate(self.request, selectors.console_projects(self.request.user), per_page=50)
        for project in page.object_list:
            project.syncs = {s.target: s for s in project.access_syncs.all()}
            project.cluster_sync = cluster_sync_enabled(project)
        context.update(page=page, targets=SyncTarget, mlflow_sync=mlflow_sync_enabled())
        return context


class ProjectDetailView(ConsoleMixin, TemplateView):
    """Who has access to this project, its quota within the team budget, its backend, and
    where its access stands in the cluster and in MLflow."""

    template_name = "console/project_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        project = get_project_by_slug_for_user(self.request.user, kwargs["team"], kwargs["slug"], Action.MANAGE)
        team = project.team
        siblings = sum(team.projects.exclude(pk=project.pk).values_list("gpu_quota", flat=True))
        context.update(
            project=project,
            team=team,
            access=selectors.team_access(team),
            headroom=max(team.gpu_budget - siblings, 0),
            syncs={s.target: s for s in SyncState.objects.filter(project=project)},
            cluster_sync=cluster_sync_enabled(project),
            mlflow_sync=mlflow_sync_enabled(),
            policy_url=_reverse_or_empty("registry:policy", team=team.slug, slug=project.slug),
        )
        return context


class ProjectSyncView(ConsoleMixin, View):
    """POST: run the project's access sync now (the reconciler would within its period)."""

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        from apps.console.sync import sync_project

        project = get_project_by_slug_for_user(request.user, team, slug, Action.MANAGE)
        states = sync_project(project.pk)
        if not states:
            messages.info(request, "No access sync is configured for this project (local backend, no MLflow admin).")
        for state in states:
            level = messages.error if state.status == "error" else messages.success
            level(request, f"{state.get_target_display()}: {state.message}")
        return redirect("console:project-detail", team=team, slug=slug)


# --- templates --------------------------------------------------------------------------------
class TemplateListView(ConsoleMixin, TemplateView):
    template_name = "console/templates.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(page=paginate(self.request, selectors.console_templates(self.request.user), per_page=50))
        return context


def _team_choices(user: Any) -> list[tuple[str, str]]:
    choices = [("", "(global)")] if policies.is_platform_admin(user) else []
    return choices + [(t.slug, t.slug) for t in Team.objects.for_user(user, Action.MANAGE).order_by("slug")]


def _environment_choices(user: Any) -> list[Any]:
    """Environments a template editor may pin: ready or deprecated, platform-wide or of a
    team they manage (the service checks the template's own team)."""
    from django.db.models import Q

    from apps.environments.models import SELECTABLE_STATES, Environment

    teams = Team.objects.for_user(user, Action.MANAGE)
    rows = Environment.objects.for_user(user, Action.VIEW).filter(state__in=SELECTABLE_STATES)
    rows = rows.filter(Q(team__isnull=True) | Q(team__in=teams)).select_related("team")
    return list(rows.order_by("team__slug", "name", "-version"))


def _template_data(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in {"team", "slug"}}


class TemplateCreateView(ConsoleMixin, View):
    template_name = "console/template_form.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = TemplateForm(teams=_team_choices(request.user), environments=_environment_choices(request.user))
        return render(request, self.template_name, {"form": form})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = TemplateForm(
            request.POST, teams=_team_choices(request.user), environments=_environment_choices(request.user)
        )
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            team = get_team_for_user(request.user, data["team"], Action.MANAGE) if data["team"] else None
            template, status = run_service(
                form,
                lambda: launch_services.create_template(
                    actor_of(request), team, slug=data["slug"], **_template_data(data)
                ),
            )
            if template is not None:
                messages.success(request, f"Template {template} created.")
                return redirect("console:template-list")
        return render(request, self.template_name, {"form": form}, status=status)


class TemplateEditView(ConsoleMixin, View):
    template_name = "console/template_form.html"

    @staticmethod
    def template(request: HttpRequest, pk: int) -> Template:
        # The edit form itself needs the right to change the template: leads for their
        # team's, platform admins for global ones (visible to all, so a 403, not a 404).
        template: Template = get_template_for_user(request.user, pk, Action.MANAGE)
        return template

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        template = self.template(request, pk)
        initial = {field: getattr(template, field) for field in launch_services.TEMPLATE_FIELDS}
        initial["environment"] = str(template.environment_id or "")
        form = TemplateForm(
            initial=initial,
            teams=[],
            editing=True,
            environments=_environment_choices(request.user),
            current_environment=template.environment,
        )
        return render(request, self.template_name, {"form": form, "template": template})

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        template = self.template(request, pk)
        form = TemplateForm(
            request.POST,
            teams=[],
            editing=True,
            environments=_environment_choices(request.user),
            current_environment=template.environment,
        )
        status = 400
        if form.is_valid():
            data = _template_data(form.cleaned_data)
            updated, status = run_service(
                form, lambda: launch_services.update_template(actor_of(request), template, **data)
            )
            if updated is not None:
                messages.success(request, f"Template {updated} saved.")
                return redirect("console:template-list")
        return render(request, self.template_name, {"form": form, "template": template}, status=status)
