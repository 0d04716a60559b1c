"""Models pages: the index, a project's registered models, one model (versions, runs,
aliases, history, rollback), attaching a model, the project's promotion policy and the
team's notification webhook. Promotion requests and the inbox are in views_requests.py."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views import View
from django.views.generic import TemplateView

from apps.access.lookups import get_project_by_slug_for_user, get_team_for_user
from apps.access.mixins import ObjectAccessMixin
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.core.filters import FilteredListMixin
from apps.core.pages import paginate, run_service
from apps.notifications.models import TeamWebhook
from apps.notifications.services import configure_webhook, rotate_webhook_secret
from apps.projects.models import Project
from apps.registry import policies, services
from apps.registry.evidence import metric_rows, scoped_evidence
from apps.registry.filters import PromotionFilter
from apps.registry.forms import AttachForm, PolicyForm, RollbackForm, WebhookForm
from apps.registry.lookups import get_model_for_user
from apps.registry.mlflow import MlflowUnavailable
from apps.registry.models import PromotionRequest, RegisteredModel, Source
from apps.registry.selectors import history, model_views, one_model, requests_with_votes


class IndexView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    """Where models live: the projects you can see, the latest promotion requests of your
    teams, and how many wait for your decision."""

    template_name = "registry/index.html"
    filterset_class = PromotionFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        found = requests_with_votes(PromotionRequest.objects.for_user(user)).order_by("-created_at", "-id")
        context.update(
            projects=list(Project.objects.for_user(user).select_related("team").order_by("team__slug", "slug")),
            page=paginate(self.request, self.filtered(found)),
            awaiting=policies.pending_count(user),
        )
        return context


def project_context(request: HttpRequest, project: Project, **extra: Any) -> dict[str, Any]:
    models, mlflow_error = [], ""
    try:
        models = model_views([project], with_versions=False)
    except MlflowUnavailable as exc:
        mlflow_error = exc.message
    recent = requests_with_votes(PromotionRequest.objects.filter(project=project)).order_by("-created_at", "-id")
    known = RegisteredModel.objects.filter(project=project).order_by("name").values_list("name", flat=True)
    context = {
        "project": project,
        "models": models,
        "known": list(known),
        "mlflow_error": mlflow_error,
        "policy": policies.policy_for(project),
        "requests": list(recent[:10]),
        "can_attach": policies.can_attach_model(request.user, project),
        "can_edit_policy": policies.can_edit_policy(request.user, project),
        "attach_form": AttachForm(),
    }
    context.update(extra)
    return context


class ProjectModelsView(ObjectAccessMixin, TemplateView):
    """A project's registered models (those MLflow tags `plinth.project = <team>/<project>`)."""

    template_name = "registry/project.html"
    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(project_context(self.request, self.object))
        return context


class AttachView(ObjectAccessMixin, View):
    """Leads attach a model registered elsewhere: its `plinth.project` tag is set in MLflow."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        form = AttachForm(request.POST)
        status = 400
        if form.is_valid():
            model, status = run_service(
                form, lambda: services.attach_model(actor_of(request), self.object, form.cleaned_data["name"])
            )
            if model is not None:
                messages.success(request, f"{model.name} now belongs to {self.object.full_slug}.")
                return redirect("registry:model", name=model.name)
        context = project_context(request, self.object, attach_form=form, attach_open=True)
        return render(request, "registry/project.html", context, status=status)


class PolicyView(ObjectAccessMixin, View):
    """The project's promotion policy: everyone in the team reads it, leads edit it."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")
    template_name = "registry/policy.html"

    def _render(self, request: HttpRequest, form: PolicyForm | None = None, status: int = 200) -> HttpResponse:
        project: Project = self.object
        policy = policies.policy_for(project)
        audit = policy.as_audit()
        if form is None:
            form = PolicyForm(
                initial={
                    **audit,
                    "approvers": ", ".join(audit["approvers"]),
                    "allowed_aliases": ", ".join(audit["allowed_aliases"]),
                }
            )
        context = {
            "project": project,
            "policy": policy,
            "form": form,
            "can_edit": policies.can_edit_policy(request.user, project),
        }
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        form = PolicyForm(request.POST)
        status = 400
        if form.is_valid():
            _, status = run_service(
                form, lambda: services.update_policy(actor_of(request), self.object, **form.cleaned_data)
            )
            if status == 200:
                messages.success(request, f"Promotion policy of {self.object.full_slug} saved.")
                return redirect("registry:policy", team=team, slug=slug)
        return self._render(request, form, status)


def _deployments_of(user: Any, model: RegisteredModel) -> list[Any]:
    """The deployments of `model` in its project that `user` may see, each with its
    serving revisions (`serving_revisions`, by traffic, largest first). Two queries."""
    from apps.deployments.models import Deployment, Revision, RevisionStatus

    serving = Revision.objects.filter(status=RevisionStatus.SERVING).order_by("-traffic", "number")
    return list(
        Deployment.objects.for_user(user, Action.VIEW)
        .filter(project=model.project, model_name=model.name)
        .prefetch_related(Prefetch("revisions", queryset=serving, to_attr="serving_revisions"))
        .order_by("name")[:50]
    )


def model_context(request: HttpRequest, model: RegisteredModel, **extra: Any) -> dict[str, Any]:
    view, mlflow_error = None, ""
    runs: dict[str, dict[str, Any]] = {}
    try:
        view, runs = one_model(model)
    except MlflowUnavailable as exc:
        mlflow_error = exc.message
    rows = list(history(model)[:100])
    current = [row for row in rows if row.valid_to is None]
    policy = policies.policy_for(model.project)
    user = request.user
    requests = list(requests_with_votes(model.requests.all()).order_by("-created_at", "-id")[:20]) if model.pk else []
    versions = []
    for version in view.versions if view else []:
        run = runs.get(version["run_id"], {})
        versions.append({**version, "run": run, "metrics": run.get("metrics", {})})
    metric_names = sorted({key for v in versions[:20] for key in v["metrics"]})[:6]
    context = {
        "model": model,
        "project": model.project,
        "view": view,
        "versions": versions,
        "metric_names": metric_names,
        "mlflow_error": mlflow_error,
        "history": rows,
        "current": [
            {
                "row": row,
                "evidence": metric_rows(scoped_evidence(row.request.evidence, model.project)) if row.request else [],
            }
            for row in current
        ],
        "flagged": [row for row in current if row.source == Source.OUTSIDE],
        "requests": requests,
        "policy": policy,
        "can_request": policies.can_request_promotion(user, model.project),
        "can_emergency": policies.can_emergency_rollback(user, model.project),
        "rollbacks": [
            row for row in current if row.previous_version is not None and row.alias in policy.allowed_aliases
        ],
        "rollback_form": RollbackForm(),
        "deployments": _deployments_of(user, model),
    }
    context.update(extra)
    return context


class ModelDetailView(ObjectAccessMixin, TemplateView):
    """One model: its versions with the runs they came from, current aliases (flagged when
    changed outside Plinth), the alias history with who asked and who approved, rollback."""

    template_name = "registry/model.html"
    lookup = get_model_for_user
    lookup_kwargs = ("name",)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(model_context(self.request, self.object))
        return context


class RollbackView(ObjectAccessMixin, View):
    """Ask to point an alias back at its previous holder (or, for a lead, do it at once)."""

    lookup = get_model_for_user
    lookup_kwargs = ("name",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        form = RollbackForm(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            made, status = run_service(
                form,
                lambda: services.request_rollback(
                    actor_of(request),
                    self.object,
                    alias=data["alias"],
                    justification=data["justification"],
                    emergency=data["emergency"],
                ),
            )
            if made is not None:
                verb = "Emergency rollback under way" if made.emergency else "Rollback requested"
                messages.success(
                    request, f"{verb}: #{made.pk}, {made.model.name}@{made.alias} → version {made.version}."
                )
                return redirect("registry:request", pk=made.pk)
        context = model_context(request, self.object, rollback_form=form)
        return render(request, "registry/model.html", context, status=status)


class WebhookView(ObjectAccessMixin, View):
    """The team's notification webhook (leads): JSON POSTs signed with HMAC-SHA256.

    A secret Plinth makes (first webhook, Rotate) is shown exactly once: the POST keeps it in
    the session and redirects, the next GET takes it out and shows it (post/redirect/get, so a
    reload or the back button cannot show it again). Afterwards the page only says when the
    secret was set. Every answer is `Cache-Control: no-store`."""

    lookup = get_team_for_user
    read_action = Action.MANAGE
    template_name = "registry/webhook.html"

    def _session_key(self) -> str:
        return f"registry.webhook_secret.{self.object.pk}"

    def _render(self, request: HttpRequest, form: WebhookForm, status: int = 200, shown: str = "") -> HttpResponse:
        hook = TeamWebhook.objects.filter(team=self.object).first()
        context = {"team": self.object, "hook": hook, "form": form, "shown_secret": shown}
        response = render(request, self.template_name, context, status=status)
        add_never_cache_headers(response)
        return response

    def _show_once(self, request: HttpRequest, secret: str) -> HttpResponse:
        request.session[self._session_key()] = secret
        return redirect("registry:webhook", slug=self.object.slug)

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        hook = TeamWebhook.objects.filter(team=self.object).first()
        initial = {"url": hook.url, "is_active": hook.is_active} if hook else {"is_active": True}
        shown = str(request.session.pop(self._session_key(), "") or "")
        return self._render(request, WebhookForm(initial=initial), shown=shown)

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        if request.POST.get("action") == "rotate":
            return self._rotate(request)
        form = WebhookForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, 400)
        data = form.cleaned_data
        result, status = run_service(
            form,
            lambda: configure_webhook(
                actor_of(request), self.object, url=data["url"], secret=data["secret"], is_active=data["is_active"]
            ),
        )
        if result is None:
            return self._render(request, form, status)
        _, shown = result
        messages.success(request, "Webhook saved.")
        if shown:
            return self._show_once(request, shown)
        return redirect("registry:webhook", slug=slug)

    def _rotate(self, request: HttpRequest) -> HttpResponse:
        # A refusal (409: no webhook yet) becomes the error page, via ServiceErrorMiddleware.
        _, secret = rotate_webhook_secret(actor_of(request), self.object)
        messages.success(request, "New signing secret made: the old one no longer signs calls.")
        return self._show_once(request, secret)
