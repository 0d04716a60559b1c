"""Pages about people: home, teams and their members, my account and API tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import LoginView, LogoutView
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views import View
from django.views.generic import TemplateView

from apps.access import policies
from apps.access.lookups import get_api_token_for_user, get_membership_for_user, get_team_for_user
from apps.access.mixins import ObjectAccessMixin, PlatformAdminMixin
from apps.access.policies import actor_of
from apps.access.roles import Action, Role
from apps.accounts import preferences, ratelimit, services
from apps.accounts.filters import TeamFilter
from apps.accounts.forms import AddMemberForm, RoleForm, TeamForm, TimeZoneForm, TokenForm
from apps.accounts.models import ApiToken, Membership, Team
from apps.core.filters import FilteredListMixin
from apps.core.middleware import client_ip
from apps.core.pages import paginate, run_service
from apps.core.partials import FragmentMixin, fragment_for, render_fragment
from apps.core.timezones import COOKIE as TZ_COOKIE
from apps.core.timezones import valid_zone
from apps.deployments.lookups import attention_items as deployment_attention
from apps.projects.models import ExperimentState, Project
from apps.registry.policies import awaiting_decision


class PlinthLoginView(LoginView):
    """Django's login page, rate-limited per address and per account (a 429 with a lockout
    message, see apps.accounts.ratelimit), with a "Sign in with SSO" button when OIDC is on."""

    redirect_authenticated_user = True
    template_name = "accounts/login.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = settings.PLINTH_OIDC_ENABLED
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Counted before the password is checked, so simultaneous guesses cannot all slip
        # under the limit (apps.accounts.ratelimit).
        ip, username = client_ip(request), str(request.POST.get("username", ""))[:150]
        lockout = ratelimit.begin(ip, username)
        if lockout is not None:
            # An unbound form: a bound one would check the password as soon as the page reads
            # its errors, which is exactly what the lockout refuses.
            form = self.get_form_class()(request, initial={"username": username})
            context = self.get_context_data(form=form, lockout=lockout.message)
            response = render(request, self.template_name, context, status=429)
            response["Retry-After"] = str(lockout.retry_after)
            return response
        response = super().post(request, *args, **kwargs)
        if getattr(request.user, "is_authenticated", False):
            ratelimit.succeeded(ip, username)
        return response


class PlinthLogoutView(LogoutView):
    """Django's sign-out (POST only), then the login page says so: "You are signed out."
    The message is added after the session is flushed, so it survives into the next page."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are signed out.")
        return response


class HomeView(LoginRequiredMixin, TemplateView):
    """My teams, my projects and what needs my attention."""

    template_name = "accounts/home.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        user = self.request.user
        context = super().get_context_data(**kwargs)
        memberships = list(
            Membership.objects.filter(user=actor_of(self.request))
            .select_related("team")
            .annotate(n_projects=Count("team__projects", distinct=True))
            .order_by("team__slug")
        )
        projects = list(Project.objects.for_user(user, Action.VIEW).select_related("team")[:50])
        context.update(memberships=memberships, projects=projects, attention=self.attention(memberships, projects))
        return context

    def attention(self, memberships: Sequence[Membership], projects: list[Project]) -> list[dict[str, str]]:
        user = self.request.user
        items: list[dict[str, str]] = []
        managed = {m.team_id for m in memberships if m.role == Role.LEAD}
        for project in projects:
            failed = project.mlflow_state in (ExperimentState.FAILED, ExperimentState.REFUSED)
            if failed and policies.can_manage_team(user, project.team):
                items.append(
                    {
                        "level": "error",
                        "text": f"{project.full_slug}: MLflow refused the experiment — {project.mlflow_error}",
                        "url": _project_url(project),
                    }
                )
            elif project.mlflow_state == ExperimentState.PENDING:
                items.append(
                    {
                        "level": "warning",
                        "text": f"{project.full_slug}: waiting for MLflow to create the "
                        "experiment (retried automatically).",
                        "url": _project_url(project),
                    }
                )
        items.extend(self.pending_promotions())
        items.extend(deployment_attention(user))  # failed rollouts of deployments the user may change
        lone = (
            Team.objects.filter(pk__in=managed)
            .annotate(leads=Count("memberships", filter=Q(memberships__role=Role.LEAD)))
            .filter(leads=1)
        )
        for team in lone:
            items.append(
                {
                    "level": "info",
                    "text": f"You are the only lead of {team.slug}: name a second lead so the team is never stuck.",
                    "url": f"/teams/{team.slug}/",
                }
            )
        if not memberships and not policies.is_platform_admin(user):
            items.append(
                {"level": "info", "text": "You are not in any team yet. Ask a team lead to add you.", "url": ""}
            )
        return items

    def pending_promotions(self) -> list[dict[str, str]]:
        """The promotion requests waiting for my decision: the same selector as the
        navigation's badge (apps.registry.policies.awaiting_decision), so the two agree."""
        waiting = awaiting_decision(self.request.user).select_related("model", "requested_by").order_by("created_at")
        shown = list(waiting[: PENDING_SHOWN + 1])
        items = [
            {
                "level": "warning",
                "text": f"Promotion #{r.pk} waits for your decision: {r.model.name} version {r.version} "
                f"→ @{r.alias}, asked by {r.requested_by.username}.",
                "url": reverse("registry:request", args=[r.pk]),
            }
            for r in shown[:PENDING_SHOWN]
        ]
        if len(shown) > PENDING_SHOWN:
            more = "More promotions wait for you in the inbox."
            items.append({"level": "warning", "text": more, "url": reverse("registry:inbox")})
        return items


PENDING_SHOWN = 10  # promotion requests listed on the home page; the inbox has the rest


def _project_url(project: Project) -> str:
    return f"/projects/{project.team.slug}/{project.slug}/"


class TeamListView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    template_name = "accounts/team_list.html"
    filterset_class = TeamFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        teams = (
            Team.objects.for_user(self.request.user, Action.VIEW)
            .annotate(n_members=Count("memberships", distinct=True), n_projects=Count("projects", distinct=True))
            .order_by("slug")
        )
        context.update(
            page=paginate(self.request, self.filtered(teams)), can_create=policies.can_create_team(self.request.user)
        )
        return context


class TeamCreateView(PlatformAdminMixin, View):
    template_name = "accounts/team_form.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": TeamForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = TeamForm(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            team, status = run_service(
                form,
                lambda: services.create_team(
                    actor_of(request),
                    slug=data["slug"],
                    name=data["name"],
                    description=data["description"],
                    gpu_budget=data["gpu_budget"],
                    lead=data["lead"],
                ),
            )
            if team is not None:
                messages.success(request, f"Team {team.slug} created.")
                return redirect("teams:detail", slug=team.slug)
        return render(request, self.template_name, {"form": form}, status=status)


class TeamDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """Members and roles (editable by leads), projects, budget. The members table is a
    fragment (`#members`), which the member forms swap."""

    template_name = "accounts/team_detail.html"
    lookup = get_team_for_user
    fragments = ("members",)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(team_context(self.request, self.object))
        context.setdefault("add_form", AddMemberForm())
        context["oob"] = fragment_for(self.request, self.fragments) is not None
        return context


def team_context(request: HttpRequest, team: Team) -> dict[str, Any]:
    members = list(team.memberships.select_related("user").order_by("user__username"))
    projects = list(team.projects.all().order_by("slug"))
    return {
        "team": team,
        "members": members,
        "projects": projects,
        "quota_allocated": sum(p.gpu_quota for p in projects),
        "can_manage": policies.can_manage_team(request.user, team),
        "is_admin": policies.is_platform_admin(request.user),
        "roles": Role.choices,
        "my_role": policies.team_role(request.user, team),
    }


def _render_members(request: HttpRequest, team: Team, status: int = 200, **extra: Any) -> HttpResponse:
    context = team_context(request, team)
    context.setdefault("add_form", AddMemberForm())
    context.update(extra)
    if fragment_for(request, TeamDetailView.fragments):  # the member forms swap #members
        context["oob"] = True  # the messages come with the fragment, out of band
        return render_fragment(request, "accounts/team_detail.html", "members", context, status=status)
    return render(request, "accounts/team_detail.html", context, status=status)


class MemberAddView(ObjectAccessMixin, View):
    lookup = get_team_for_user

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        team = self.object
        form = AddMemberForm(request.POST)
        status = 400
        if form.is_valid():
            membership, status = run_service(
                form,
                lambda: services.add_member(
                    actor_of(request),
                    team,
                    username=form.cleaned_data["username"],
                    role=form.cleaned_data["role"],
                ),
            )
            if membership is not None:
                messages.success(request, f"Added {membership.user.username} as {membership.role}.")
                if not fragment_for(request, ("members",)):
                    return redirect("teams:detail", slug=team.slug)
                return _render_members(request, team)
        return _render_members(request, team, status=status, add_form=form)


class MemberChangeView(ObjectAccessMixin, View):
    """POST role=... changes a role; POST to the remove URL removes the member."""

    lookup = get_team_for_user
    remove = False

    def action_for(self, request: HttpRequest, kwargs: dict[str, Any]) -> Action:
        # Anyone may leave a team; everything else here is for leads.
        leaving = self.remove and kwargs.get("username") == request.user.get_username()
        return Action.VIEW if leaving else Action.MANAGE

    def post(self, request: HttpRequest, slug: str, username: str) -> HttpResponse:
        team = self.object
        membership = get_membership_for_user(request.user, team, username, self.action_for(request, self.kwargs))
        # Removing takes no input: a form without fields, so a refusal is its one error.
        form: forms.Form = forms.Form(request.POST) if self.remove else RoleForm(request.POST)
        if not form.is_valid():
            status = 400
        elif self.remove:
            _, status = run_service(form, lambda: services.remove_member(actor_of(request), membership))
            text = f"Removed {username} from {team.slug}."
        else:
            _, status = run_service(
                form, lambda: services.set_member_role(actor_of(request), membership, form.cleaned_data["role"])
            )
            text = f"{username} is now {form.cleaned_data['role']}."
        if status == 200:
            messages.success(request, text)
            if not fragment_for(request, ("members",)):
                return redirect("teams:detail", slug=team.slug)
            return _render_members(request, team)
        # Said once: next to the members table, not again as a message.
        error = " ".join(dict.fromkeys(str(e) for errors in form.errors.values() for e in errors))
        return _render_members(request, team, status=status, member_error=error)


NEW_TOKEN_SESSION_KEY = "plinth_new_api_token"


class AccountView(LoginRequiredMixin, View):
    """My account: memberships and API tokens (create shows the key once; revoke)."""

    template_name = "accounts/account.html"

    def context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        tokens = ApiToken.objects.filter(user=actor_of(request)).order_by("-created_at")
        context = {
            "tokens": tokens,
            "memberships": Membership.objects.filter(user=actor_of(request)).select_related("team"),
            "form": TokenForm(),
            "tz_form": TimeZoneForm(initial={"time_zone": actor_of(request).time_zone}),
            "shown_zone": timezone.get_current_timezone_name(),
            "browser_zone": valid_zone(request.COOKIES.get(TZ_COOKIE, "")),
        }
        context.update(extra)
        return context

    def get(self, request: HttpRequest) -> HttpResponse:
        # A key just created is handed over through the session once (post/redirect/get):
        # popped here, so a refresh or the back button never shows it again.
        extra: dict[str, Any] = {}
        fresh = request.session.pop(NEW_TOKEN_SESSION_KEY, None)
        if isinstance(fresh, dict) and isinstance(fresh.get("id"), int):
            token = ApiToken.objects.filter(pk=fresh["id"], user=actor_of(request)).first()
            if token is not None:
                extra = {"new_key": str(fresh.get("key", "")), "new_token": token}
        response = render(request, self.template_name, self.context(request, **extra))
        add_never_cache_headers(response)
        return response

    def post(self, request: HttpRequest) -> HttpResponse:
        form = TokenForm(request.POST)
        if not form.is_valid():
            return render(request, self.template_name, self.context(request, form=form), status=400)
        days = form.cleaned_data.get("expires_in_days")
        expires = timezone.now() + timedelta(days=days) if days else None
        result, status = run_service(
            form,
            lambda: services.create_api_token(actor_of(request), name=form.cleaned_data["name"], expires_at=expires),
        )
        if result is None:
            return render(request, self.template_name, self.context(request, form=form), status=status)
        token, key = result
        request.session[NEW_TOKEN_SESSION_KEY] = {"id": token.pk, "key": key}
        return redirect("account")


class AccountTimeZoneView(LoginRequiredMixin, View):
    """My account: the time zone pages show times in (audited: accounts.preferences)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        form = TimeZoneForm(request.POST)
        status = 400
        if form.is_valid():
            done, status = run_service(
                form, lambda: preferences.set_time_zone(actor_of(request), form.cleaned_data["time_zone"])
            )
            if done is not None:
                zone = done.time_zone or "your browser's time zone"
                messages.success(request, f"Times are now shown in {zone}.")
                return redirect("account")
        view = AccountView()
        return render(request, view.template_name, view.context(request, tz_form=form), status=status)


class TokenRevokeView(LoginRequiredMixin, View):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        # One's own tokens only: another user's token id is a 404, not a 403.
        token = get_api_token_for_user(request.user, pk, Action.MANAGE)
        services.revoke_api_token(actor_of(request), token)
        messages.success(request, f"Token {token.name} revoked; it stops working immediately.")
        return redirect("account")
