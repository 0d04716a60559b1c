"""Every verb an audit event can carry (Zulip's audit log types, as an enum).

The stored value is the dotted string (`<target>.<what happened>`); rows written before the
enum existed carry the same strings. Add a member here before a service records a new verb:
`apps.audit.services.record` refuses anything else."""

from __future__ import annotations

from django.db import models


class AuditVerb(models.TextChoices):
    # accounts: users, sign-in, SSO
    ACCOUNT_TIME_ZONE_SET = "account.time_zone_set", "Time zone set"
    USER_CREATED = "user.created", "User created"
    USER_DEACTIVATED = "user.deactivated", "User deactivated"
    USER_REACTIVATED = "user.reactivated", "User reactivated"
    USER_SIGN_IN_UNLOCKED = "user.sign_in_unlocked", "Sign-in unlocked"
    USER_SSO_SIGNED_UP = "user.sso_signed_up", "Signed up through SSO"
    USER_SSO_LINKED = "user.sso_linked", "SSO identity linked"
    USER_SSO_UNLINKED = "user.sso_unlinked", "SSO identity unlinked"
    USER_SSO_REFUSED = "user.sso_refused", "SSO sign-in refused"
    SSO_MAPPING_ADDED = "sso.mapping_added", "SSO group mapping added"
    SSO_MAPPING_REMOVED = "sso.mapping_removed", "SSO group mapping removed"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    # teams
    TEAM_CREATED = "team.created", "Team created"
    TEAM_UPDATED = "team.updated", "Team updated"
    TEAM_MEMBER_ADDED = "team.member_added", "Member added"
    TEAM_ROLE_CHANGED = "team.role_changed", "Role changed"
    TEAM_MEMBER_REMOVED = "team.member_removed", "Member removed"
    TEAM_WEBHOOK_CONFIGURED = "team.webhook_configured", "Webhook configured"
    TEAM_WEBHOOK_SECRET_ROTATED = "team.webhook_secret_rotated", "Webhook secret rotated"
    # projects and their MLflow experiment
    PROJECT_CREATED = "project.created", "Project created"
    PROJECT_UPDATED = "project.updated", "Project updated"
    PROJECT_EXPERIMENT_LINKED = "project.experiment_linked", "Experiment linked"
    PROJECT_EXPERIMENT_ATTACHED = "project.experiment_attached", "Experiment attached"
    PROJECT_EXPERIMENT_REPLACED = "project.experiment_replaced", "Experiment replaced"
    PROJECT_EXPERIMENT_RENAMED = "project.experiment_renamed", "Experiment renamed"
    PROJECT_EXPERIMENT_DELETED = "project.experiment_deleted", "Experiment deleted"
    PROJECT_EXPERIMENT_RESTORED = "project.experiment_restored", "Experiment restored"
    PROJECT_EXPERIMENT_FAILED = "project.experiment_failed", "Experiment link failed"
    PROJECT_EXPERIMENT_REFUSED = "project.experiment_refused", "Experiment link refused"
    # cluster and MLflow permission sync (apps.console.sync)
    CLUSTER_SYNCED = "cluster.synced", "Cluster access synced"
    CLUSTER_DRIFT_REPAIRED = "cluster.drift_repaired", "Cluster access drift repaired"
    MLFLOW_SYNCED = "mlflow.synced", "MLflow permissions synced"
    MLFLOW_DRIFT_REPAIRED = "mlflow.drift_repaired", "MLflow permission drift repaired"
    # launches, templates, sweeps
    TEMPLATE_CREATED = "template.created", "Template created"
    TEMPLATE_UPDATED = "template.updated", "Template updated"
    LAUNCH_CREATED = "launch.created", "Launch created"
    LAUNCH_CANCELLED = "launch.cancelled", "Launch cancelled"
    SWEEP_CREATED = "sweep.created", "Sweep created"
    SWEEP_FINISHED = "sweep.finished", "Sweep ended"
    SWEEP_CANCELLED = "sweep.cancelled", "Sweep cancelled"
    SWEEP_EXTENDED = "sweep.extended", "Sweep extended"
    TRIAL_PRUNED = "sweep.trial_pruned", "Trial pruned"
    # registry: models, aliases, promotions
    MODEL_ATTACHED = "model.attached", "Model attached"
    MODEL_MOVED = "model.moved", "Model moved"
    ALIAS_OBSERVED = "alias.observed", "Alias observed"
    ALIAS_CHANGED_OUTSIDE = "alias.changed_outside", "Alias changed outside Plinth"
    PROMOTION_PROMOTION_REQUESTED = "promotion.promotion_requested", "Promotion requested"
    PROMOTION_ROLLBACK_REQUESTED = "promotion.rollback_requested", "Rollback requested"
    PROMOTION_EMERGENCY_ROLLBACK = "promotion.emergency_rollback", "Emergency rollback"
    PROMOTION_VOTE = "promotion.vote", "Promotion vote"
    PROMOTION_APPROVED = "promotion.approved", "Promotion approved"
    PROMOTION_REJECTED = "promotion.rejected", "Promotion rejected"
    PROMOTION_WITHDRAWN = "promotion.withdrawn", "Promotion withdrawn"
    PROMOTION_EXPIRED = "promotion.expired", "Promotion expired"
    PROMOTION_APPLIED = "promotion.applied", "Promotion applied"
    PROMOTION_FAILED = "promotion.failed", "Promotion failed"
    PROMOTION_REVERTED = "promotion.reverted", "Promotion reverted"
    PROMOTION_POLICY_UPDATED = "promotion.policy_updated", "Promotion policy updated"
    # deployments: serving a registered model, its rollouts and serving keys
    DEPLOYMENT_CREATE = "deployment.create", "Deployment created"
    DEPLOYMENT_UPDATE = "deployment.update", "Deployment updated"
    DEPLOYMENT_DELETE = "deployment.delete", "Deployment deleted"
    DEPLOYMENT_ROLLBACK = "deployment.rollback", "Deployment rolled back by hand"
    DEPLOYMENT_ROLLOUT_STARTED = "deployment.rollout_started", "Rollout started"
    DEPLOYMENT_PROMOTED = "deployment.promoted", "Revision promoted"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back", "Revision rolled back"
    DEPLOYMENT_PREFLIGHT_FAILED = "deployment.preflight_failed", "Revision failed its pre-flight"
    DEPLOYMENT_KEY_CREATE = "deployment.key_create", "Serving key created"
    DEPLOYMENT_KEY_REVOKE = "deployment.key_revoke", "Serving key revoked"
    # environments: standard environments, their builds and life cycle
    ENVIRONMENT_CREATED = "environment.created", "Environment created"
    ENVIRONMENT_CHANGED = "environment.changed", "Environment changed"
    ENVIRONMENT_BUILT = "environment.built", "Environment built"
    ENVIRONMENT_BUILD_FAILED = "environment.build_failed", "Environment build failed"
    ENVIRONMENT_DEPRECATED = "environment.deprecated", "Environment deprecated"
    ENVIRONMENT_RETIRED = "environment.retired", "Environment retired"
    ENVIRONMENT_DEFAULT_SET = "environment.default_set", "Default environment set"
    # GPUs
    GPU_PRICE_SET = "gpu.price.set", "GPU price set"
    GPU_PRICE_REMOVED = "gpu.price.removed", "GPU price removed"
    GPU_IDLE_POLICY_CHANGED = "gpu.idle_policy.changed", "Idle policy changed"
    GPU_IDLE_EXEMPTION_GRANTED = "gpu.idle_exemption.granted", "Idle exemption granted"
    GPU_IDLE_EXEMPTION_REMOVED = "gpu.idle_exemption.removed", "Idle exemption removed"
    GPU_IDLE_NOTIFIED = "gpu.idle.notified", "Idle GPUs reported"
    GPU_IDLE_RECLAIMED = "gpu.idle.reclaimed", "Idle GPUs reclaimed"
