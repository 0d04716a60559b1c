"""Deployment pages: a project's deployments, creating one (the model page's "Deploy"),
one deployment (revisions and traffic, the rollout timeline, live charts, "try it", the
curl line, serving keys) and its actions (edit, delete, rollback, keys). Every change goes
through apps.deployments.services; forms follow post/redirect/get."""

from __future__ import annotations

import contextlib
import json
import shlex
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.cache import cache
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from apps.access.lookups import get_project_by_slug_for_user
from apps.access.mixins import ObjectAccessMixin
from apps.access.policies import actor_of, can
from apps.access.roles import Action
from apps.core.errors import ServiceError
from apps.core.filters import FilteredListMixin
from apps.core.pages import paginate, run_action, run_service
from apps.core.partials import FragmentMixin, fragment_for, render_fragment, stop_polling
from apps.deployments import services
from apps.deployments.charts import metric_figures
from apps.deployments.filters import DeploymentFilter
from apps.deployments.forms import (
    CHART_WINDOWS,
    ChartWindowForm,
    DeploymentCreateForm,
    DeploymentSettingsForm,
    ServingKeyForm,
)
from apps.deployments.lookups import (
    alias_versions,
    gateway_path,
    get_deployment_for_user,
    get_serving_key_for_user,
    revisions_in_window,
    window_metrics,
)
from apps.deployments.models import (
    LIVE_REVISION_STATUSES,
    Deployment,
    DeploymentStatus,
    Revision,
    RevisionStatus,
    RolloutStep,
    ServingKey,
)
from apps.deployments.serializers import drift_of, recent_revisions, serving_revision, with_revisions
from apps.deployments.serving.registry import serving_backend
from apps.environments.models import SELECTABLE_STATES, Environment, EnvironmentState
from apps.projects.models import Project
from apps.registry.models import RegisteredModel

# Minutes of request metrics on the lists (rates).
LIST_WINDOW_MINUTES = 5
# While a rollout is in flight the page polls quickly; while serving, slowly (live charts).
FAST_POLL = "every 3s"
SLOW_POLL = "every 15s"
IN_FLIGHT = (DeploymentStatus.STARTING, DeploymentStatus.ROLLING_OUT, DeploymentStatus.DELETING)
TRY_SESSION_KEY = "deployments.try.{pk}"
NEW_KEY_SESSION_KEY = "deployments.new_key.{pk}"
ANSWER_SHOWN = 4000  # characters of a model's answer shown on the page
TIMELINE_SHOWN = 50


def _detail_url(deployment: Deployment) -> str:
    return reverse("deployments:detail", kwargs={"pk": deployment.pk})


def deployment_rows(deployments: list[Deployment]) -> tuple[list[dict[str, Any]], str]:
    """The rows of a deployments table ({deployment, serving_version, split, drift,
    alias_version, per_minute, error_rate (a fraction), p95_ms}) over the last
    LIST_WINDOW_MINUTES, and the serving backend's error ("" when it answered). The
    deployments come from `with_revisions`; one alias query and one metrics call in all."""
    aliases = alias_versions(deployments)
    since = timezone.now() - timedelta(minutes=LIST_WINDOW_MINUTES)
    metrics, serving_error = {}, ""
    try:
        metrics = window_metrics(deployments, since)
    except ServiceError as exc:  # the backend down (503), or not configured for metrics
        serving_error = exc.message
    rows = []
    for deployment in deployments:
        revisions = recent_revisions(deployment)
        serving = [r for r in revisions if r.status == RevisionStatus.SERVING]
        found = [metrics[r.pk] for r in serving if r.pk in metrics]
        requests = sum(m.requests for m in found)
        errors = sum(m.errors_5xx for m in found)
        p95 = [m.p95_ms for m in found if m.p95_ms is not None]
        stable = serving_revision(revisions)
        rows.append(
            {
                "deployment": deployment,
                "serving_version": stable.version if stable else None,
                "split": sorted(serving, key=lambda r: -r.traffic),
                "drift": drift_of(deployment, revisions, aliases.get(deployment.pk)),
                "alias_version": aliases.get(deployment.pk),
                "per_minute": requests / LIST_WINDOW_MINUTES if found else None,
                "error_rate": errors / requests if requests else None,
                "p95_ms": max(p95) if p95 else None,
            }
        )
    return rows, serving_error


class DeploymentListView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    """Every deployment the user may see (their teams' projects; all for platform admins),
    narrowed by the API's filters (?project= ?model= ?status=), 25 a page, with the
    project page's columns."""

    template_name = "deployments/index.html"
    filterset_class = DeploymentFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        found = self.filtered(Deployment.objects.for_user(user)).order_by(
            "project__team__slug", "project__slug", "name"
        )
        page = paginate(self.request, with_revisions(found))
        rows, serving_error = deployment_rows(list(page.object_list))
        context.update(
            page=page,
            rows=rows,
            window=LIST_WINDOW_MINUTES,
            serving_error=serving_error,
            can_deploy=Project.objects.for_user(user, Action.LAUNCH).exists(),
        )
        return context


class ProjectDeploymentsView(ObjectAccessMixin, TemplateView):
    """A project's deployments: status, serving version, traffic split, and over the last
    minutes requests per minute, 5xx rate and p95 latency (the serving backend's numbers;
    a message when it cannot be reached)."""

    template_name = "deployments/list.html"
    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        project: Project = self.object
        deployments = list(with_revisions(Deployment.objects.filter(project=project)).order_by("name"))
        rows, serving_error = deployment_rows(deployments)
        context.update(
            project=project,
            rows=rows,
            window=LIST_WINDOW_MINUTES,
            serving_error=serving_error,
            can_deploy=can(self.request.user, Action.LAUNCH, project.team),
        )
        return context


class DeploymentCreateView(ObjectAccessMixin, View):
    """Deploy a registered model of the project (`?model=` preselects one: the model
    page's "Deploy" button). Members, leads and platform admins."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")
    read_action = Action.LAUNCH
    write_action = Action.LAUNCH
    template_name = "deployments/form.html"

    def _models(self) -> list[str]:
        return list(RegisteredModel.objects.filter(project=self.object).order_by("name").values_list("name", flat=True))

    def _render(self, request: HttpRequest, form: DeploymentCreateForm, status: int = 200) -> HttpResponse:
        context = {"form": form, "project": self.object, "creating": True, "models": form.models}
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        chosen = request.GET.get("model", "")
        form = DeploymentCreateForm(
            models=self._models(),
            environments=environment_choices(request.user),
            initial={"model": chosen, "name": free_name(self.object, _suggest_name(chosen))},
        )
        return self._render(request, form)

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        form = DeploymentCreateForm(request.POST, models=self._models(), environments=environment_choices(request.user))
        status = 400
        if form.is_valid():
            data = form.service_values()
            name, model = data.pop("name"), data.pop("model")
            made, status = run_service(
                form, lambda: services.create_deployment(actor_of(request), self.object, name=name, model=model, **data)
            )
            if made is not None:
                messages.success(request, f"Deploying {made.model_name} as {made.name}: the first revision starts now.")
                return redirect(_detail_url(made))
        return self._render(request, form, status)


def environment_choices(user: Any, current: int | None = None) -> list[Environment]:
    """The environments `user` may pick for a deployment: the selectable ones they may use
    (ready or deprecated), and `current` (the deployment's own) even when it no longer is."""
    rows = Environment.objects.for_user(user, "view").select_related("team")
    selectable = Q(state__in=SELECTABLE_STATES)
    return list(rows.filter(selectable | Q(pk=current or 0)).order_by("name", "-version"))


def _suggest_name(model: str) -> str:
    """A DNS-safe name from a model's name ("Digits_v2" → "digits-v2"), or ""."""
    cleaned = "".join(c if c.isalnum() else "-" for c in model.lower() if c.isascii()).strip("-")
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    cleaned = cleaned[:45].rstrip("-")
    return cleaned if cleaned[:1].isalpha() else ""


def free_name(project: Project, name: str) -> str:
    """`name` if no deployment of `project` has it, else the first free of name-2,
    name-3 … (kept within the 45 characters of a name); "" stays "". One query."""
    if not name:
        return ""
    taken = set(Deployment.objects.filter(project=project, name__startswith=name[:39]).values_list("name", flat=True))
    if name not in taken:
        return name
    number = 2
    while True:
        suffix = f"-{number}"
        candidate = name[: 45 - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        number += 1


class DeploymentDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """One deployment. Its live region (status, revisions and traffic, timeline, charts)
    is one fragment, polled every 3 s while a rollout is in flight and every 15 s while it
    serves (the charts are live); each poll also refreshes the actions (out of band: "Roll
    back" only while there is a revision to go back to) and, once the served version's input
    example becomes known, the curl line and "Try it"'s body. Polling stops once the
    deployment failed, or is gone (then the actions, "Try it" and the key form go too).
    `?window=` picks the charts' span (ChartWindowForm)."""

    template_name = "deployments/detail.html"
    lookup = get_deployment_for_user
    lookup_kwargs = ("pk",)
    fragments = ("live",)

    def finished(self) -> bool:
        return bool(self.object.status == DeploymentStatus.FAILED)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return super().dispatch(request, *args, **kwargs)
        except Http404:
            if fragment_for(request, self.fragments) is None:
                raise
            # The poll of a deployment that is gone (deleted meanwhile): its last answer.
            return stop_polling(HttpResponse(GONE_HTML))

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        polled = fragment_for(self.request, self.fragments) is not None
        context.update(live_context(self.request, self.object, polled=polled))
        if not polled:
            context.update(page_context(self.request, self.object))
        return context


# The last answer to the poll of a deployment that is gone: the live region says so, and the
# actions, "Try it", the curl line and the key form go (out of band).
GONE_HTML = (
    '<div id="live"><p class="empty" data-gone>This deployment is gone.</p></div>'
    '<div class="actions" id="actions" hx-swap-oob="true"></div>'
    '<section class="card" id="try" hx-swap-oob="true"><h2>Try it</h2>'
    '<p class="empty">This deployment is gone.</p></section>'
    '<section class="card" id="call" hx-swap-oob="true"><h2>Call it</h2>'
    '<p class="empty">This deployment is gone: its URL no longer answers.</p></section>'
    '<div id="key-form" hx-swap-oob="true"></div>'
)
# Adaptive chart window: at most the last hour, from shortly before the deployment was made.
ADAPTIVE_MINUTES = 60
ADAPTIVE_MARGIN = timedelta(minutes=2)
ADAPTIVE_AT_LEAST = timedelta(minutes=5)
NO_EXAMPLE_CACHE_S = 30


def chart_window(request: HttpRequest, deployment: Deployment, now: datetime) -> dict[str, Any]:
    """The charts' span: {since, until, value (the ?window= value, "" adaptive), label,
    choices [(value, text)]}. Adaptive: max(now - 60 min, created - 2 min), and at
    least 5 minutes."""
    minutes = ChartWindowForm(request.GET).minutes()
    if minutes is not None:
        since = now - timedelta(minutes=minutes)
        label = CHART_WINDOWS[minutes]
    else:
        since = max(now - timedelta(minutes=ADAPTIVE_MINUTES), deployment.created_at - ADAPTIVE_MARGIN)
        since = min(since, now - ADAPTIVE_AT_LEAST)
        span = round((now - since).total_seconds() / 60)
        label = f"{span} minutes"
    choices = [("", "Adaptive"), *((str(m), text) for m, text in CHART_WINDOWS.items())]
    return {"since": since, "until": now, "value": str(minutes or ""), "label": label, "choices": choices}


def example_text(deployment: Deployment, stable: Revision | None, *, polled: bool = False) -> str:
    """The input example as JSON text for the page: the deployment's own, else the stable
    revision's model's logged one; "" when there is none or MLflow does not answer (the
    page then shows a placeholder). A poll that found none remembers so for
    NO_EXAMPLE_CACHE_S, so an open page does not ask MLflow every 3 s."""
    from apps.deployments.examples import input_example

    if deployment.input_example is not None:
        return json.dumps(deployment.input_example)
    if stable is None:
        return ""
    key = f"deployments.no-example.{deployment.pk}.{deployment.created_at.timestamp()}.{stable.version}"
    if polled and cache.get(key):
        return ""
    try:
        text = input_example(deployment, stable.version).decode()
    except (ServiceError, UnicodeDecodeError):
        text = ""
    if not text:
        cache.set(key, True, NO_EXAMPLE_CACHE_S)
    return text


def one_line_json(text: str) -> str:
    """`text` as compact one-line JSON when it parses, else as it is."""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return text


def rollback_offered(deployment: Deployment, revisions: list[Revision]) -> Revision | None:
    """The revision "Roll back" would send the traffic to (rollout.rollback_target), or
    None when the service would refuse it: nothing to go back to, a manual rollback still
    starting (one query, only while a revision starts), the deployment being deleted."""
    from apps.deployments.rollout import rollback_target

    if deployment.status == DeploymentStatus.DELETING:
        return None
    target = rollback_target(revisions)
    if target is None or target.is_canary or target.status == RevisionStatus.SERVING:
        return target  # the canary case (the stable one takes it all) is never refused
    if any(r.status == RevisionStatus.STARTING for r in revisions):
        starting_rollback = deployment.events.filter(
            step=RolloutStep.ROLLED_BACK, actor__isnull=False, revision__status=RevisionStatus.STARTING
        ).exists()
        if starting_rollback:
            return None
    return target


def live_context(request: HttpRequest, deployment: Deployment, *, polled: bool = False) -> dict[str, Any]:
    """What the live fragment shows (status, revisions, timeline, charts) and what a poll
    refreshes out of band (`oob`, when `polled`): the actions and, while the page had no
    input example (?example absent) and one is known now, the curl line and "Try it"'s body."""
    revisions = list(
        deployment.revisions.select_related("created_by", "environment__team", "environment__replaced_by__team")
    )
    revisions.sort(key=lambda r: -r.number)
    aliases = alias_versions([deployment])
    window = chart_window(request, deployment, timezone.now())
    charted = revisions_in_window(deployment, window["since"])
    figures, serving_error = [], ""
    if charted:
        try:
            series = serving_backend(deployment.backend).series(charted, window["since"])
            figures = metric_figures(charted, series, window["since"], window["until"])
        except ServiceError as exc:  # the backend down (503), or not configured for metrics
            serving_error = exc.message
    events = list(deployment.events.select_related("actor", "revision")[:TIMELINE_SHOWN])
    stable = serving_revision(revisions)
    in_flight = deployment.status in IN_FLIGHT
    may_change = can(request.user, Action.LAUNCH, deployment.project.team)
    deprecated: dict[int, Environment] = {}
    for r in revisions:
        env = r.environment
        if r.status in LIVE_REVISION_STATUSES and env is not None and env.state == EnvironmentState.DEPRECATED:
            deprecated.setdefault(env.pk, env)
    had_example = polled and request.GET.get("example") == "known"
    example = "" if had_example else example_text(deployment, stable, polled=polled)
    url = request.build_absolute_uri(gateway_path(deployment))
    curl_body = one_line_json(example) if example else '{"dataframe_split": {"columns": [...], "data": [[...]]}}'
    poll_query = {
        k: v for k, v in (("window", window["value"]), ("example", "known" if example or had_example else "")) if v
    }
    return {
        "deployment": deployment,
        "revisions": revisions,
        "stable": stable,
        "alias_version": aliases.get(deployment.pk),
        "drift": drift_of(deployment, revisions, aliases.get(deployment.pk)),
        "deprecated_environments": list(deprecated.values()),
        "events": events,
        "figures": figures,
        "serving_error": serving_error,
        "poll": FAST_POLL if in_flight else SLOW_POLL,
        "poll_query": urlencode(poll_query),
        "polling": deployment.status != DeploymentStatus.FAILED,
        "chart_window": window,
        "may_change": may_change,
        "deleting": deployment.status == DeploymentStatus.DELETING,
        "rollback_to": rollback_offered(deployment, revisions) if may_change else None,
        "oob": polled,
        # the curl line and the body of "Try it": re-sent by a poll only when newly known
        "example": example,
        "refresh_example": polled and bool(example) and not had_example,
        "url": url,
        "curl": (
            f"curl -X POST {shlex.quote(url)} -H 'Authorization: Bearer <your token or serving key>' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(curl_body)}"
        ),
    }


def page_context(request: HttpRequest, deployment: Deployment) -> dict[str, Any]:
    """The rest of the page: "try it"'s answer, the new key shown once, serving keys."""
    may_change = can(request.user, Action.LAUNCH, deployment.project.team)
    session = request.session
    return {
        "tried": session.pop(TRY_SESSION_KEY.format(pk=deployment.pk), None) if may_change else None,
        "new_key": session.pop(NEW_KEY_SESSION_KEY.format(pk=deployment.pk), None) if may_change else None,
        "keys": list(ServingKey.objects.filter(deployment=deployment).select_related("created_by")),
        "key_form": ServingKeyForm(),
    }


class DeploymentEditView(ObjectAccessMixin, View):
    """Change what the deployment follows (alias or pinned version), its rollout policy,
    replicas, input example and sampling. Members, leads and platform admins."""

    lookup = get_deployment_for_user
    lookup_kwargs = ("pk",)
    read_action = Action.LAUNCH
    write_action = Action.LAUNCH
    template_name = "deployments/form.html"

    def _render(self, request: HttpRequest, form: DeploymentSettingsForm, status: int = 200) -> HttpResponse:
        context = {"form": form, "project": self.object.project, "deployment": self.object, "creating": False}
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        d: Deployment = self.object
        initial = {
            "alias": d.alias,
            "version": d.pinned_version,
            "canary_percent": d.canary_percent,
            "canary_minutes": d.canary_minutes,
            "max_error_rate": d.max_error_rate,
            "max_p95_ms": d.max_p95_ms,
            "min_replicas": d.min_replicas,
            "max_replicas": d.max_replicas,
            "input_example": json.dumps(d.input_example, indent=1) if d.input_example is not None else "",
            "capture_samples": d.capture_samples,
            "environment": str(d.environment_id or ""),
        }
        choices = environment_choices(request.user, d.environment_id)
        return self._render(request, DeploymentSettingsForm(initial=initial, environments=choices))

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = DeploymentSettingsForm(
            request.POST, environments=environment_choices(request.user, self.object.environment_id)
        )
        status = 400
        if form.is_valid():
            values = form.service_values()
            done, status = run_service(
                form, lambda: services.update_deployment(actor_of(request), self.object, **values)
            )
            if done is not None:
                messages.success(request, f"{done.name} saved.")
                return redirect(_detail_url(done))
        return self._render(request, form, status)


class DeploymentDeleteView(ObjectAccessMixin, View):
    lookup = get_deployment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        deployment: Deployment = self.object
        project = deployment.project
        return run_action(
            request,
            lambda: services.delete_deployment(actor_of(request), deployment),
            success=f"Deleting {deployment.name}: its model servers stop, then it is gone.",
            then=reverse("deployments:project", kwargs={"team": project.team.slug, "slug": project.slug}),
        )


class DeploymentRollbackView(ObjectAccessMixin, View):
    lookup = get_deployment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Roll back; a conflict (nothing to go back to, a rollback already starting, the
        deployment being deleted) comes back to the deployment page as an error message
        (post/redirect/get) rather than an error page."""
        deployment: Deployment = self.object
        return run_action(
            request,
            lambda: services.rollback_deployment(actor_of(request), deployment),
            success=lambda back: (
                f"Rolled back: version {back.version} takes 100 % of the traffic"
                + (" now." if back.status == RevisionStatus.SERVING else " once its pre-flight passes.")
            ),
            then=_detail_url(deployment),
            conflict_message="Not rolled back: ",
        )


def try_deployment(deployment: Deployment, body_text: str) -> dict[str, Any]:
    """Send `body_text` (or, when empty, the input example: the deployment's, else the
    model's serving_input_example.json) straight to the stable revision (the one serving
    most of the traffic; not counted in the deployment's request numbers, which are the
    gateway's); {status, answer, version, revision, latency_ms, sent} or {error}."""
    from apps.deployments.examples import input_example

    if deployment.status == DeploymentStatus.DELETING:
        return {"error": "This deployment is being deleted."}
    revisions = recent_revisions(deployment)
    target = serving_revision(revisions)
    if target is None:
        return {"error": "Nothing serves yet: try again once a revision takes traffic."}
    try:
        body = body_text.encode() if body_text.strip() else input_example(deployment, target.version)
        answer = serving_backend(deployment.backend).predict(target, body, "application/json")
    except ServiceError as exc:
        return {"error": exc.message, "version": target.version, "revision": target.number}
    text = answer.body.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=1)
    return {
        "status": answer.status,
        "answer": text[:ANSWER_SHOWN] + ("…" if len(text) > ANSWER_SHOWN else ""),
        "version": target.version,
        "revision": target.number,
        "latency_ms": round(answer.latency_ms, 1),
        "sent": body.decode("utf-8", "replace")[:ANSWER_SHOWN],
    }


class DeploymentTryView(ObjectAccessMixin, View):
    """ "Try it": one prediction on the input example (or the JSON typed in the panel). An
    htmx request gets the panel back with the answer; a plain POST redirects to the page,
    which shows the answer once (post/redirect/get). Members, leads, platform admins."""

    lookup = get_deployment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        deployment: Deployment = self.object
        text = str(request.POST.get("body", ""))[:65536]
        deployment = with_revisions(Deployment.objects.filter(pk=deployment.pk)).get()
        tried = try_deployment(deployment, text)
        if getattr(request, "htmx", False):
            context = {"deployment": deployment, "tried": tried, "example": text, "may_change": True}
            return render_fragment(request, "deployments/detail.html", "try", context)
        request.session[TRY_SESSION_KEY.format(pk=deployment.pk)] = tried
        return redirect(_detail_url(deployment) + "#try")


class ServingKeyCreateView(ObjectAccessMixin, View):
    """A new serving key: shown once on the page it redirects to."""

    lookup = get_deployment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        deployment: Deployment = self.object
        form = ServingKeyForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Give the key a name (at most 80 characters).")
            return redirect(_detail_url(deployment) + "#keys")

        def made() -> tuple[ServingKey, str]:
            return services.create_serving_key(actor_of(request), deployment, form.cleaned_data["name"])

        def remember(done: tuple[ServingKey, str]) -> HttpResponse:
            key, secret = done
            request.session[NEW_KEY_SESSION_KEY.format(pk=deployment.pk)] = {"name": key.name, "key": secret}
            return redirect(_detail_url(deployment) + "#keys")

        return run_action(
            request,
            made,
            success=lambda done: f"Serving key {done[0].name} made: copy it now, it is shown once.",
            then=_detail_url(deployment),
            respond=remember,
        )


class ServingKeyRevokeView(ObjectAccessMixin, View):
    lookup = get_deployment_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int, key: int) -> HttpResponse:
        deployment: Deployment = self.object
        found = get_serving_key_for_user(request.user, deployment, key, Action.LAUNCH)
        return run_action(
            request,
            lambda: services.revoke_serving_key(actor_of(request), found),
            success=f"Serving key {found.name} revoked: callers using it now get 401.",
            then=_detail_url(deployment) + "#keys",
        )
