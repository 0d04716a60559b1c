from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from apps.access import policies
from apps.access.mixins import PolicyRequiredMixin
from apps.audit.filters import AuditFilter
from apps.audit.models import AuditEvent
from apps.core.filters import FilteredListMixin, errors_text
from apps.core.pages import error_response, paginate


def visible_events(user: Any) -> QuerySet[AuditEvent]:
    """The audit events `user` may see (AuditFilter narrows them: page, CSV and API)."""
    return AuditEvent.objects.for_user(user).select_related("actor")


class _AuditAccessMixin(PolicyRequiredMixin):
    policy = staticmethod(policies.can_view_audit)
    denied = "The audit log is for team leads and platform admins."


class AuditListView(_AuditAccessMixin, FilteredListMixin, TemplateView):
    """The audit log: everything for platform admins, their teams' events for leads."""

    template_name = "audit/list.html"
    filterset_class = AuditFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        events = self.filtered(visible_events(self.request.user))
        context.update(page=paginate(self.request, events, per_page=50), export_query=self.request.GET.urlencode())
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

    def get(self, request: HttpRequest) -> HttpResponseBase:
        found = AuditFilter(request.GET, queryset=visible_events(request.user).select_related(None), request=request)
        if not found.is_valid():
            return error_response(request, 400, errors_text(found.form))
        events = found.qs
        writer = csv.writer(_Echo())
        response = StreamingHttpResponse((writer.writerow(row) for row in _rows(events)), content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="plinth-audit-{stamp}.csv"'
        return response
