from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.registry.evidence import evaluate_gate, scoped_evidence
from apps.registry.models import AliasHistory, Comparison, PromotionRequest

# MLflow keeps a model version number in an SQL INTEGER column (model_versions.version):
# 32 bits on PostgreSQL and MySQL, so no MLflow holds a version above 2**31 - 1 (and
# PositiveIntegerField, where Plinth keeps it, has the same range).
MAX_VERSION = 2**31 - 1


class VoteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    voter = serializers.CharField(source="voter.username")
    decision = serializers.CharField()
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()


class PromotionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    project = serializers.CharField(source="project.full_slug", read_only=True)
    model = serializers.CharField(source="model.name", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)
    votes = VoteSerializer(many=True, read_only=True)
    approvals = serializers.SerializerMethodField()
    gate = serializers.SerializerMethodField()
    evidence = serializers.SerializerMethodField()

    class Meta:
        model = PromotionRequest
        fields = [
            "id",
            "project",
            "model",
            "version",
            "alias",
            "kind",
            "emergency",
            "justification",
            "requested_by",
            "status",
            "status_reason",
            "required_approvals",
            "approvals",
            "votes",
            "gate",
            "evidence",
            "previous_version",
            "created_at",
            "expires_at",
            "decided_at",
            "approved_at",
            "applied_at",
        ]
        read_only_fields = fields

    def get_approvals(self, request: PromotionRequest) -> int:
        return sum(1 for vote in request.votes.all() if vote.decision == "approve")

    def get_evidence(self, request: PromotionRequest) -> dict[str, Any]:
        """The captured evidence, without the data of runs outside the request's project."""
        return scoped_evidence(request.evidence, request.project)

    def get_gate(self, request: PromotionRequest) -> dict[str, Any]:
        gate = evaluate_gate(request)
        return {
            "metric": request.gate_metric,
            "comparison": request.gate_comparison,
            "passed": gate.passed,
            "text": gate.text,
        }


class PromotionCreateSerializer(serializers.Serializer):  # type: ignore[type-arg]
    model = serializers.CharField(max_length=256, help_text="Registered model name")
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)
    alias = serializers.CharField(max_length=255, default="champion")
    justification = serializers.CharField(max_length=5000)


class DecisionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")


class RollbackSerializer(serializers.Serializer):  # type: ignore[type-arg]
    justification = serializers.CharField(max_length=5000)
    emergency = serializers.BooleanField(required=False, default=False)


class AliasHistorySerializer(serializers.Serializer):  # type: ignore[type-arg]
    """One history row: `from`/`to` per the API contract (`to` null = the current holder)."""

    alias = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    previous_version = serializers.IntegerField(allow_null=True)
    request = serializers.IntegerField(source="request_id", allow_null=True)
    requested_by = serializers.SerializerMethodField()
    approved_by = serializers.SerializerMethodField()

    def get_requested_by(self, row: AliasHistory) -> str | None:
        return row.request.requested_by.username if row.request else None

    def get_approved_by(self, row: AliasHistory) -> list[str]:
        if row.request is None:
            return []
        return [vote.voter.username for vote in getattr(row.request, "approvals", [])]

    def to_representation(self, instance: AliasHistory) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        field = serializers.DateTimeField()
        data["from"] = field.to_representation(instance.valid_from)
        data["to"] = field.to_representation(instance.valid_to) if instance.valid_to else None
        data["source"] = instance.source  # plinth, outside (changed directly in MLflow) or observed
        return data


class PolicySerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A project's promotion policy. PATCH any subset; `approvers: []` restores the default
    (the team's leads)."""

    approvers = serializers.ListField(child=serializers.CharField(), required=False)
    # The ranges apps.registry.services.update_policy enforces.
    required_approvals = serializers.IntegerField(required=False, min_value=1, max_value=10)
    expiry_days = serializers.IntegerField(required=False, min_value=1, max_value=90)
    allowed_aliases = serializers.ListField(child=serializers.CharField(), required=False)
    gate_metric = serializers.CharField(required=False, allow_blank=True)
    gate_comparison = serializers.ChoiceField(choices=["", *Comparison.values], required=False, allow_blank=True)
