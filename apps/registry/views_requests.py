"""Promotion request pages: ask (with the evidence), the request itself (decisions, evidence
table and chart, live status while it is applied), approve / reject / withdraw, and the
approvals inbox of the people who decide."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View
from django.views.generic import TemplateView
from django_htmx.http import HttpResponseStopPolling

from apps.access.mixins import ObjectAccessMixin
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.core.errors import ServiceError
from apps.core.pages import paginate
from apps.registry import policies, services
from apps.registry.evidence import evaluate_gate, evidence_figure, metric_rows, scoped_evidence
from apps.registry.forms import DecisionForm, PromotionForm
from apps.registry.lookups import get_model_for_user, get_promotion_for_user
from apps.registry.mlflow import registry
from apps.registry.models import IN_FLIGHT, PromotionRequest, RegisteredModel, Status
from apps.registry.selectors import requests_with_votes


class RequestCreateView(ObjectAccessMixin, View):
    """Ask for an alias (one the policy allows) to point at a version, with a justification."""

    lookup = get_model_for_user
    lookup_kwargs = ("name",)
    read_action = Action.LAUNCH  # the form is for those who may ask: viewers get 403
    write_action = Action.LAUNCH
    template_name = "registry/request_form.html"

    def _form(self, data: Any = None, initial: dict[str, Any] | None = None) -> PromotionForm:
        model: RegisteredModel = self.object
        versions = sorted({int(v["version"]) for v in registry().model_versions([model.name])}, reverse=True)
        aliases = list(policies.policy_for(model.project).allowed_aliases)
        return PromotionForm(data, initial=initial, versions=versions, aliases=aliases)

    def _render(self, request: HttpRequest, form: PromotionForm, status: int = 200) -> HttpResponse:
        model: RegisteredModel = self.object
        context = {"model": model, "project": model.project, "form": form, "policy": policies.policy_for(model.project)}
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        initial = {key: request.GET[key] for key in ("version", "alias") if key in request.GET}
        return self._render(request, self._form(initial=initial))

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        form = self._form(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                made = services.create_request(
                    actor_of(request),
                    self.object,
                    version=data["version"],
                    alias=data["alias"],
                    justification=data["justification"],
                )
            except ServiceError as exc:
                if exc.status_code == 403:
                    raise PermissionDenied(exc.message) from exc
                placed = False
                for key, texts in exc.fields.items():
                    if key in form.fields:
                        placed = True
                        for text in texts:
                            form.add_error(key, text)
                if not placed:
                    form.add_error(None, exc.message)
                status = exc.status_code
            else:
                messages.success(request, f"Request #{made.pk} sent to the approvers.")
                return redirect("registry:request", pk=made.pk)
        return self._render(request, form, status)


def request_context(request: HttpRequest, promotion: PromotionRequest, **extra: Any) -> dict[str, Any]:
    found = requests_with_votes(PromotionRequest.objects.filter(pk=promotion.pk)).first()
    assert found is not None
    policy = policies.policy_for(found.project)
    user = request.user
    context = {
        "req": found,
        "project": found.project,
        "votes": list(found.votes.all()),
        "approvals": sum(1 for v in found.votes.all() if v.decision == "approve"),
        "gate": evaluate_gate(found),
        "evidence": scoped_evidence(found.evidence, found.project),
        "rows": metric_rows(scoped_evidence(found.evidence, found.project)),
        "figure": evidence_figure(scoped_evidence(found.evidence, found.project)),
        "policy": policy,
        "can_decide": found.is_pending and policies.can_approve(user, found, policy),
        "can_withdraw": found.is_pending and policies.can_withdraw(user, found),
        "live": found.status in IN_FLIGHT,
        "form": DecisionForm(),
    }
    context.update(extra)
    return context


class RequestDetailView(ObjectAccessMixin, TemplateView):
    """One request: who asked and why, the evidence, the votes, and its status live while
    it is being applied (htmx polling that stops once it is applied or failed)."""

    template_name = "registry/request.html"
    lookup = get_promotion_for_user
    lookup_kwargs = ("pk",)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if getattr(request, "htmx", False) and request.GET.get("part") == "status":
            response = render(request, f"{self.template_name}#status", self.get_context_data(**kwargs))
            if self.object.status not in IN_FLIGHT:
                return HttpResponseStopPolling(response.content)
            return response
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(request_context(self.request, self.object))
        return context


def inbox_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    waiting = requests_with_votes(policies.awaiting_decision(request.user)).order_by("created_at", "id")
    page = paginate(request, waiting, per_page=50)
    rows = [{"req": r, "gate": evaluate_gate(r), "approvals": sum(1 for v in r.votes.all() if v.decision == "approve")}
            for r in page.object_list]  # fmt: skip
    context = {"page": page, "rows": rows, "form": DecisionForm()}
    context.update(extra)
    return context


class InboxView(LoginRequiredMixin, TemplateView):
    """Pending requests the signed-in person may decide (not their own), oldest first."""

    template_name = "registry/inbox.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(inbox_context(self.request))
        return context


class DecisionView(ObjectAccessMixin, View):
    """POST approve / reject (with a comment) or withdraw. From the inbox (htmx) it answers
    with the refreshed inbox; otherwise it goes back to the request page."""

    lookup = get_promotion_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.VIEW  # who may decide is the policy's question (403 from the service)
    decision = "approve"

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = DecisionForm(request.POST)
        comment = form.cleaned_data["comment"] if form.is_valid() else ""
        actor = actor_of(request)
        from_inbox = request.POST.get("from") == "inbox"
        try:
            if self.decision == "approve":
                done = services.approve(actor, self.object, comment)
            elif self.decision == "reject":
                done = services.reject(actor, self.object, comment)
            else:
                done = services.withdraw(actor, self.object)
        except ServiceError as exc:
            if exc.status_code == 403:
                raise PermissionDenied(exc.message) from exc
            messages.error(request, exc.message)
            if from_inbox and getattr(request, "htmx", False):
                return render(request, "registry/inbox.html#inbox", inbox_context(request), status=exc.status_code)
            context = request_context(request, self.object, error=exc.message)
            return render(request, "registry/request.html", context, status=exc.status_code)
        messages.success(request, _said(done, self.decision))
        if from_inbox:
            if getattr(request, "htmx", False):
                return render(request, "registry/inbox.html#inbox", inbox_context(request))
            return redirect("registry:inbox")
        return redirect("registry:request", pk=pk)


def _said(done: PromotionRequest, decision: str) -> str:
    if decision == "withdraw":
        return f"Request #{done.pk} withdrawn."
    if decision == "reject":
        return f"Request #{done.pk} rejected."
    if done.status == Status.PENDING:
        return f"Your approval of #{done.pk} is recorded; it needs {done.required_approvals} in all."
    return f"Request #{done.pk} approved: {done.model.name}@{done.alias} moves to version {done.version} now."
