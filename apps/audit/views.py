from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views import View
from django.views.generic import TemplateView

from apps.access import policies
from apps.accounts.models import Team
from apps.audit.models import AuditEvent
from apps.core.pages import paginate

FILTERS = ("actor", "team", "project", "verb", "target_type", "since", "until", "request_id", "q")


def _day_start(value: str) -> datetime | None:
    day = parse_date(value)
    return timezone.make_aware(datetime.combine(day, time.min)) if day else None


def filtered_events(user: Any, params: Any) -> QuerySet[AuditEvent]:
    """The audit events `user` may see, narrowed by ?actor= &team= &project= &verb=
    &target_type= &since= &until= (days, YYYY-MM-DD, both included) &request_id= &q= (a
    word in the target's label)."""
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
    if target_type := params.get("target_type", "").strip():
        events = events.filter(target_type=target_type)
    if (since := _day_start(params.get("since", "").strip())) is not None:
        events = events.filter(created_at__gte=since)
    if (until := _day_start(params.get("until", "").strip())) is not None:
        events = events.filter(created_at__lt=until + timedelta(days=1))
    if request_id := params.get("request_id", "").strip():
        events = events.filter(request_id=request_id)
    if query := params.get("q", "").strip():
        events = events.filter(target_label__icontains=query)
    return events


class _AuditAccessMixin(LoginRequiredMixin):
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.is_authenticated and not policies.can_view_audit(request.user):
            raise PermissionDenied("The audit log is for team leads and platform admins.")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


class AuditListView(_AuditAccessMixin, TemplateView):
    """The audit log: everything for platform admins, their teams' events for leads."""

    template_name = "audit/list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        params = self.request.GET
        events = filtered_events(self.request.user, params)
        context.update(
            page=paginate(self.request, events, per_page=50),
            filters={k: params.get(k, "") for k in FILTERS},
            export_query=params.urlencode(),
            target_types=AuditEvent.objects.for_user(self.request.user)
            .order_by("target_type")
            .values_list("target_type", flat=True)
            .distinct(),
            teams=Team.objects.for_user(self.request.user, "manage").values_list("slug", flat=True),
            verbs=AuditEvent.objects.for_user(self.request.user)
            .order_by("verb")
            .values_list("verb", flat=True)
            .distinct(),
        )
        return context


CSV_COLUMNS = [
    "id",
    "created_at",
    "actor",
    "verb",
    "target_type",
    "target_id",
    "target",
    "team",
    "project",
    "before",
    "after",
    "request_id",
    "ip",
]


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab / CR)
    gets a leading apostrophe (OWASP's advice on CSV injection)."""
    if value is None:
        text = ""
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _rows(events: QuerySet[AuditEvent]) -> Iterator[list[str]]:
    yield CSV_COLUMNS
    for e in events.iterator(chunk_size=1000):
        yield [
            _cell(v)
            for v in (
                e.pk,
                e.created_at.isoformat(),
                e.actor_label,
                e.verb,
                e.target_type,
                e.target_id,
                e.target_label,
                e.team_label,
                e.project_label,
                e.before,
                e.after,
                e.request_id,
                e.ip,
            )
        ]


class AuditExportView(_AuditAccessMixin, View):
    """The audit log as CSV, with the page's filters (streamed: any size, constant memory)."""

    def get(self, request: HttpRequest) -> StreamingHttpResponse:
        events = filtered_events(request.user, request.GET).select_related(None)
        writer = csv.writer(_Echo())
        response = StreamingHttpResponse((writer.writerow(row) for row in _rows(events)), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="plinth-audit-{stamp}.csv"'
        return response
