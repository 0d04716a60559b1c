"""Promotion request pages: ask (with the evidence), the request itself (decisions, evidence
table and chart, live status while it is applied), approve / reject / withdraw, and the
approvals inbox of the people who decide."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from apps.access.mixins import ObjectAccessMixin
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.core.pages import paginate, run_action, run_service
from apps.core.partials import FragmentMixin, fragment_for, render_fragment
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
            made, status = run_service(
                form,
                lambda: services.create_request(
                    actor_of(request),
                    self.object,
                    version=data["version"],
                    alias=data["alias"],
                    justification=data["justification"],
                ),
            )
            if made is not None:
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


class RequestDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """One request: who asked and why, the evidence, the votes, and its status live while
    it is being applied (htmx polling of #status that stops once it is applied or failed)."""

    template_name = "registry/request.html"
    lookup = get_promotion_for_user
    lookup_kwargs = ("pk",)
    fragments = ("status",)

    def finished(self) -> bool:
        return self.object.status not in IN_FLIGHT

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

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if fragment_for(request, ("nav-approvals",)):
            # The navigation's badge (a link to this page) polls here: the count alone, from
            # the layout's own partial; the last poll (286) once nothing waits.
            count = policies.pending_count(request.user)
            context = {"nav_pending_approvals": count}
            return render_fragment(request, "base.html", "nav-approvals", context, finished=not count)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(inbox_context(self.request))
        return context


class DecisionView(ObjectAccessMixin, View):
    """POST approve / reject (with a comment) or withdraw. From the inbox (htmx swapping
    #inbox) it answers with the refreshed inbox; otherwise it goes back to the request page."""

    lookup = get_promotion_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.VIEW  # who may decide is the policy's question (403 from the service)
    decision = "approve"

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = DecisionForm(request.POST)
        comment = form.cleaned_data["comment"] if form.is_valid() else ""
        actor = actor_of(request)
        from_inbox = request.POST.get("from") == "inbox"
        decide = {
            "approve": lambda: services.approve(actor, self.object, comment),
            "reject": lambda: services.reject(actor, self.object, comment),
            "withdraw": lambda: services.withdraw(actor, self.object),
        }[self.decision]
        then = reverse("registry:inbox") if from_inbox else reverse("registry:request", kwargs={"pk": pk})
        inbox = fragment_for(request, ("inbox",))  # the inbox's forms swap #inbox
        return run_action(
            request,
            decide,
            success=lambda done: _said(done, self.decision),
            then=then,
            # The inbox (htmx) swaps its own table in, with the message and the navigation's
            # badge out of band; a refusal arrives as a message instead.
            respond=(lambda _: render_fragment(request, "registry/inbox.html", "inbox", inbox_context(request)))
            if inbox
            else None,
        )


def _said(done: PromotionRequest, decision: str) -> str:
    if decision == "withdraw":
        return f"Request #{done.pk} withdrawn."
    if decision == "reject":
        return f"Request #{done.pk} rejected."
    if done.status == Status.PENDING:
        return f"Your approval of #{done.pk} is recorded; it needs {done.required_approvals} in all."
    return f"Request #{done.pk} approved: {done.model.name}@{done.alias} moves to version {done.version} now."
