from __future__ import annotations

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.generic import TemplateView

from apps.access import policies
from apps.accounts.models import Team
from apps.audit.models import AuditEvent
from apps.core.pages import paginate


def filtered_events(user: Any, params: Any) -> QuerySet[AuditEvent]:
    """The audit events `user` may see, narrowed by ?actor= &team= &project= &verb= &target_type=."""
    events = AuditEvent.objects.for_user(user).select_related("actor")
    if actor := params.get("actor", "").strip():
        events = events.filter(actor_label=actor)
    if team := params.get("team", "").strip():
        events = events.filter(team_label=team)
    if project := params.get("project", "").strip():
        events = (
            events.filter(project_label=project)
            if "/" in project
            else events.filter(project_label__endswith=f"/{project}")
        )
    if verb := params.get("verb", "").strip():
        events = events.filter(verb__startswith=verb)
    return events


class AuditListView(LoginRequiredMixin, TemplateView):
    """The audit log: everything for platform admins, their teams' events for leads."""

    template_name = "audit/list.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.is_authenticated and not policies.can_view_audit(request.user):
            raise PermissionDenied("The audit log is for team leads and platform admins.")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        params = self.request.GET
        events = filtered_events(self.request.user, params)
        context.update(
            page=paginate(self.request, events, per_page=50),
            filters={k: params.get(k, "") for k in ("actor", "team", "project", "verb")},
            teams=Team.objects.for_user(self.request.user, "manage").values_list("slug", flat=True),
            verbs=AuditEvent.objects.for_user(self.request.user)
            .order_by("verb")
            .values_list("verb", flat=True)
            .distinct(),
        )
        return context
