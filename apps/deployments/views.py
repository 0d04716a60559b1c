"""Deployment pages: a project's deployments, creating one (the model page's "Deploy"),
one deployment (revisions and traffic, the rollout timeline, live charts, "try it", the
curl line, serving keys) and its actions (edit, delete, rollback, keys). Every change goes
through apps.deployments.services; forms follow post/redirect/get."""

from __future__ import annotations

import contextlib
import json
import shlex
from datetime import timedelta
from typing import Any

from django.contrib import messages
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
from apps.core.pages import run_action, run_service
from apps.core.partials import FragmentMixin, fragment_for, render_fragment, stop_polling
from apps.deployments import services
from apps.deployments.charts import metric_figures
from apps.deployments.forms import DeploymentCreateForm, DeploymentSettingsForm, ServingKeyForm
from apps.deployments.lookups import (
    alias_versions,
    gateway_path,
    get_deployment_for_user,
    get_serving_key_for_user,
    revisions_in_window,
    window_metrics,
)
from apps.deployments.models import Deployment, DeploymentStatus, Revision, RevisionStatus, ServingKey
from apps.deployments.serializers import drift_of, recent_revisions, serving_revision, with_revisions
from apps.deployments.serving.registry import serving_backend
from apps.environments.models import SELECTABLE_STATES, Environment
from apps.projects.models import Project
from apps.registry.models import RegisteredModel

# Minutes of request metrics on the list (rates) and of series on the deployment's charts.
LIST_WINDOW_MINUTES = 5
CHART_WINDOW_MINUTES = 60
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
            initial={"model": chosen, "name": _suggest_name(chosen)},
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


class DeploymentDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """One deployment. Its live region (status, revisions and traffic, timeline, charts)
    is one fragment, polled every 3 s while a rollout is in flight and every 15 s while it
    serves (the charts are live); polling stops once the deployment failed."""

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
            gone = HttpResponse('<div id="live"><p class="empty">This deployment is gone.</p></div>')
            return stop_polling(gone)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(live_context(self.request, self.object))
        if fragment_for(self.request, self.fragments) is None:
            context.update(page_context(self.request, self.object, context["stable"]))
        return context


def _example_text(deployment: Deployment, stable: Revision | None) -> str:
    """The input example as JSON text for the page: the deployment's own, else the stable
    revision's model's logged one; "" when there is none or MLflow does not answer (the
    page then shows a placeholder)."""
    from apps.deployments.examples import input_example

    if deployment.input_example is not None:
        return json.dumps(deployment.input_example)
    if stable is None:
        return ""
    try:
        return input_example(deployment, stable.version).decode()
    except (ServiceError, UnicodeDecodeError):
        return ""


def live_context(request: HttpRequest, deployment: Deployment) -> dict[str, Any]:
    """What the live fragment shows: status, revisions, timeline, charts."""
    revisions = list(deployment.revisions.select_related("created_by", "environment__team").order_by("-number"))
    aliases = alias_versions([deployment])
    since = timezone.now() - timedelta(minutes=CHART_WINDOW_MINUTES)
    charted = revisions_in_window(deployment, since)
    figures, serving_error = [], ""
    if charted:
        try:
            series = serving_backend(deployment.backend).series(charted, since)
            figures = metric_figures(charted, series)
        except ServiceError as exc:  # the backend down (503), or not configured for metrics
            serving_error = exc.message
    events = list(deployment.events.select_related("actor", "revision")[:TIMELINE_SHOWN])
    stable = serving_revision(revisions)
    in_flight = deployment.status in IN_FLIGHT
    return {
        "deployment": deployment,
        "revisions": revisions,
        "stable": stable,
        "alias_version": aliases.get(deployment.pk),
        "drift": drift_of(deployment, revisions, aliases.get(deployment.pk)),
        "events": events,
        "figures": figures,
        "serving_error": serving_error,
        "poll": FAST_POLL if in_flight else SLOW_POLL,
        "polling": deployment.status != DeploymentStatus.FAILED,
        "chart_minutes": CHART_WINDOW_MINUTES,
    }


def page_context(request: HttpRequest, deployment: Deployment, stable: Revision | None) -> dict[str, Any]:
    """The rest of the page: actions, "try it", the curl line, serving keys. The example in
    them is the deployment's own, else the serving version's serving_input_example.json."""
    may_change = can(request.user, Action.LAUNCH, deployment.project.team)
    url = request.build_absolute_uri(gateway_path(deployment))
    example = _example_text(deployment, stable)
    curl_body = example or '{"dataframe_split": {"columns": [...], "data": [[...]]}}'
    session = request.session
    return {
        "may_change": may_change,
        "deleting": deployment.status == DeploymentStatus.DELETING,
        "url": url,
        "curl": (
            f"curl -X POST {shlex.quote(url)} -H 'Authorization: Bearer <your token or serving key>' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(curl_body)}"
        ),
        "example": example,
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
        deployment: Deployment = self.object
        return run_action(
            request,
            lambda: services.rollback_deployment(actor_of(request), deployment),
            success=lambda back: (
                f"Rolled back: version {back.version} takes 100 % of the traffic"
                + (" now." if back.status == RevisionStatus.SERVING else " once its pre-flight passes.")
            ),
            then=_detail_url(deployment),
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
