"""Environment pages: the list (filters, state, default, usage), defining one, one
environment (content, its build with live progress and log, who uses it, its other
versions, and the actions of those who manage it), a new version (prefilled), and the
actions (deprecate/undeprecate/retire, set default, rebuild). Every change goes through
apps.environments.services; forms follow post/redirect/get; refusals are error pages."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from apps.access.mixins import ObjectAccessMixin
from apps.access.policies import (
    actor_of,
    can_define_environment,
    can_manage_environment,
    can_set_default_environment,
)
from apps.access.roles import Action
from apps.accounts.models import Team
from apps.core.filters import FilteredListMixin, errors_text
from apps.core.pages import error_response, paginate, run_action, run_service
from apps.core.partials import FragmentMixin, fragment_for
from apps.environments import services
from apps.environments.filters import EnvironmentFilter
from apps.environments.forms import ContentForm, EnvironmentChangeForm, EnvironmentCreateForm
from apps.environments.lookups import get_environment_for_user, with_related
from apps.environments.models import BuildStatus, Environment, EnvironmentState

# How much of a build's log the page shows (its tail), in characters.
LOG_SHOWN = 20000
BUILD_POLL = "every 2s"


def detail_url(env: Environment) -> str:
    return reverse("environments:detail", kwargs={"pk": env.pk})


def managed_teams(user: Any) -> list[Team]:
    """The teams whose environments `user` manages (leads; every team for platform admins)."""
    return list(Team.objects.for_user(user, Action.MANAGE).order_by("slug"))


class EnvironmentListView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    """Every environment the user may use: platform-wide ones and their teams' own, newest
    version first per name, with state, default, build and usage counts."""

    template_name = "environments/list.html"
    filterset_class = EnvironmentFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        rows = with_related(Environment.objects.for_user(self.request.user, Action.VIEW))
        page = paginate(self.request, self.filtered(rows.order_by("team__slug", "name", "-version")))
        usage = services.usage_counts([env.pk for env in page.object_list])
        context.update(
            page=page,
            rows=[
                {
                    "env": env,
                    "usage": usage[env.pk],
                    "pinned": services.image_is_pinned(env.image),
                    "image_name": env.image.split("@", 1)[0],
                }
                for env in page.object_list
            ],
            can_create=can_define_environment(self.request.user),
        )
        return context


class EnvironmentCreateView(LoginRequiredMixin, View):
    """Define an environment: platform admins (platform-wide or any team's), leads (their
    teams'). Others get 403."""

    template_name = "environments/form.html"

    def _form(self, request: HttpRequest, data: Any = None) -> EnvironmentCreateForm:
        if not can_define_environment(request.user):  # refused before any team is listed
            raise PermissionDenied("Platform admins and team leads define environments.")
        teams = [(t.slug, f"{t.slug} — {t.name}") for t in managed_teams(request.user)]
        platform = can_manage_environment(request.user, None)  # the platform-wide ones
        return EnvironmentCreateForm(data, teams=teams, platform=platform, initial={"extends_portal": True})

    def _render(self, request: HttpRequest, form: EnvironmentCreateForm, status: int = 200) -> HttpResponse:
        return render(request, self.template_name, {"form": form, "creating": True}, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, self._form(request))

    def post(self, request: HttpRequest) -> HttpResponse:
        form = self._form(request, request.POST)
        status = 400
        if form.is_valid():
            slug = form.cleaned_data["team"]
            team = Team.objects.filter(slug=slug).first() if slug else None
            made, status = run_service(
                form,
                lambda: services.create_environment(
                    actor_of(request), team=team, name=form.cleaned_data["name"], **form.content()
                ),
            )
            if made is not None:
                messages.success(request, _made_message(made))
                return redirect(detail_url(made))
        return self._render(request, form, status)


def _made_message(env: Environment) -> str:
    if env.state == EnvironmentState.BUILDING:
        return f"{env.label} defined: its build runs now; the page shows its progress."
    if env.state == EnvironmentState.FAILED:
        return f"{env.label} defined, but its requirements failed to build before: see the log."
    return f"{env.label} defined and ready."


class EnvironmentDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """One environment. The build is a fragment polled every 2 s until the build ends."""

    template_name = "environments/detail.html"
    lookup = get_environment_for_user
    lookup_kwargs = ("pk",)
    fragments = ("build",)

    def finished(self) -> bool:
        build = self.object.build
        return build is None or build.status in (BuildStatus.READY, BuildStatus.FAILED)

    def render_to_response(self, context: dict[str, Any], **response_kwargs: Any) -> HttpResponse:
        """The last poll of a build (it ended meanwhile) reloads the whole page: its state,
        the actions it now allows and the versions table changed with it."""
        response = super().render_to_response(context, **response_kwargs)
        if fragment_for(self.request, self.fragments) is not None and self.finished():
            response["HX-Refresh"] = "true"
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        env: Environment = self.object
        context.update(build_context(env, self.finished()))
        if fragment_for(self.request, self.fragments) is not None:
            return context  # the polled build alone
        user = self.request.user
        may_manage = can_manage_environment(user, env)
        versions = with_related(Environment.objects.filter(team=env.team, name=env.name)).order_by("-version")
        context.update(
            may_manage=may_manage,
            may_set_default=can_set_default_environment(user, env),
            usage=services.who_uses(env, user),
            versions=list(versions),
            pinned=services.image_is_pinned(env.image),
        )
        if may_manage:
            choices = replacements_for(env)
            initial = {
                "description": env.description,
                "replaced_by": env.replaced_by_id,
                "message": env.message,
                "redirect": env.redirect,
            }
            context["change_form"] = EnvironmentChangeForm(initial=initial, replacements=choices)
            context["retire_form"] = EnvironmentChangeForm(initial=initial, replacements=choices, auto_id="retire_%s")
        return context


def build_context(env: Environment, finished: bool) -> dict[str, Any]:
    build = env.build
    log = build.log if build is not None else ""
    return {
        "env": env,
        "build": build,
        "log": log[-LOG_SHOWN:],
        "log_cut": len(log) > LOG_SHOWN,
        "polling": not finished,
        "poll": BUILD_POLL,
    }


def replacements_for(env: Environment) -> list[Environment]:
    """What may replace `env`: usable environments of its scope (platform-wide ones too,
    for a team's own), other than itself."""
    rows = Environment.objects.filter(state__in=(EnvironmentState.READY, EnvironmentState.DEPRECATED)).exclude(
        pk=env.pk
    )
    rows = rows.filter(team__isnull=True) if env.team_id is None else rows.filter(team_id__in=[env.team_id, None])
    return list(rows.select_related("team").order_by("team__slug", "name", "-version")[:200])


class EnvironmentVersionView(ObjectAccessMixin, View):
    """A new version of an environment: the form prefilled with this version's content."""

    lookup = get_environment_for_user
    lookup_kwargs = ("pk",)
    read_action = Action.MANAGE
    write_action = Action.MANAGE
    template_name = "environments/form.html"

    def _render(self, request: HttpRequest, form: ContentForm, status: int = 200) -> HttpResponse:
        return render(request, self.template_name, {"form": form, "creating": False, "env": self.object}, status=status)

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._render(request, ContentForm(initial=ContentForm.initial_from(self.object)))

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = ContentForm(request.POST)
        status = 400
        if form.is_valid():
            made, status = run_service(
                form, lambda: services.new_version(actor_of(request), self.object, **form.content())
            )
            if made is not None:
                messages.success(request, _made_message(made))
                return redirect(detail_url(made))
        return self._render(request, form, status)


class EnvironmentChangeView(ObjectAccessMixin, View):
    """Deprecate / undeprecate / retire / describe (the detail page's forms)."""

    lookup = get_environment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        env: Environment = self.object
        form = EnvironmentChangeForm(request.POST, replacements=replacements_for(env))
        if not form.is_valid():
            return error_response(request, 400, f"That could not be read ({errors_text(form)}).", back=detail_url(env))
        data = form.cleaned_data
        action = data["action"]
        changes: dict[str, Any]
        if action == "deprecate":
            changes = {
                "state": EnvironmentState.DEPRECATED,
                "replaced_by": data["replaced_by"],
                "redirect": data["redirect"],
                "message": data["message"],
            }
            said = f"{env.label} is deprecated."
        elif action == "undeprecate":
            changes, said = {"state": EnvironmentState.READY}, f"{env.label} is ready again."
        elif action == "retire":
            changes = {
                "state": EnvironmentState.RETIRED,
                "replaced_by": data["replaced_by"],
                "message": data["message"],
            }
            said = f"{env.label} is retired: new launches and deployments that ask for it are refused."
        else:
            changes, said = {"description": data["description"]}, "Description saved."
        return run_action(
            request,
            lambda: services.change_environment(actor_of(request), env, **changes),
            success=said,
            then=detail_url(env),
        )


class EnvironmentSetDefaultView(ObjectAccessMixin, View):
    lookup = get_environment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        env: Environment = self.object
        return run_action(
            request,
            lambda: services.set_default(actor_of(request), env),
            success=f"{env.label} is the platform default: new projects run in it.",
            then=detail_url(env),
        )


class EnvironmentRebuildView(ObjectAccessMixin, View):
    lookup = get_environment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        env: Environment = self.object
        return run_action(
            request,
            lambda: services.rebuild_environment(actor_of(request), env),
            success=f"Building {env.label} again.",
            then=detail_url(env),
        )
