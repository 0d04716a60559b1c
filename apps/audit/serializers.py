from __future__ import annotations

from rest_framework import serializers

from apps.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    actor = serializers.CharField(source="actor_label")
    team = serializers.CharField(source="team_label")
    project = serializers.CharField(source="project_label")

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "verb",
            "target_type",
            "target_id",
            "target_label",
            "team",
            "project",
            "before",
            "after",
            "request_id",
            "ip",
        ]
        read_only_fields = fields
