"""Idle detection: which allocated GPUs stayed under their project's threshold for the whole
window, and what their policies say to do about it.

A GPU is idle when the samples of the last `window_minutes` all belong to its current
holder, start at the window's start, cover at least COVERAGE of it (a missed sampler pass
must not hide an idle GPU, a long outage must not invent one), all have a reading, and the
highest utilization among them is under `threshold_percent`. One reading at or above the
threshold (a spike) and it is not idle.

Per launch, not per GPU, the policy acts: the owner is told when any of its GPUs is idle;
the launch is reclaimed (cancelled) only when every GPU it holds is idle, the grace period
since the notice has passed, the policy says so and no lead exempted it. Pods Plinth did
not launch are listed for the platform team, never acted on."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min
from django.utils import timezone

from apps.core.errors import Conflict
from apps.gpus import services
from apps.gpus.models import (
    ACTIVE_FINDINGS,
    FindingStatus,
    Gpu,
    GpuSample,
    IdleExemption,
    IdleFinding,
    IdlePolicy,
    resolution_seconds,
)
from apps.launches.models import LIVE, Launch, Status

logger = logging.getLogger(__name__)

COVERAGE = 0.8


@dataclass
class Verdict:
    gpu: Gpu
    policy: IdlePolicy
    idle: bool
    peak: float | None
    since: datetime | None


def _policies(gpus: list[Gpu]) -> dict[int | None, IdlePolicy]:
    projects = {g.project_id for g in gpus if g.project_id is not None}
    found: dict[int | None, IdlePolicy] = {p.project_id: p for p in IdlePolicy.objects.filter(project_id__in=projects)}
    default = IdlePolicy.defaults()
    return defaultdict(lambda: default, found)


def judge(gpus: list[Gpu], now: datetime) -> list[Verdict]:
    """Idle or not, for every allocated GPU: one aggregate query per distinct (threshold,
    window) among the projects' policies, not one per GPU."""
    policies = _policies(gpus)
    resolution = resolution_seconds()
    groups: dict[tuple[float, int], list[Gpu]] = defaultdict(list)
    for gpu in gpus:
        policy = policies[gpu.project_id]
        groups[(policy.threshold_percent, policy.window_minutes)].append(gpu)
    verdicts: list[Verdict] = []
    for (threshold, window), members in groups.items():
        since = now - timedelta(minutes=window)
        stats: dict[tuple[int, int | None, str], dict[str, Any]] = {
            (row["gpu_id"], row["launch_id"], row["namespace"]): row
            for row in GpuSample.objects.filter(gpu_id__in=[g.pk for g in members], at__gt=since, at__lte=now)
            .order_by()
            .values("gpu_id", "launch_id", "namespace")
            .annotate(n=Count("at"), readings=Count("utilization"), peak=Max("utilization"), first=Min("at"))
        }
        totals: dict[int, int] = defaultdict(int)
        for (gpu_id, _, _), found in stats.items():
            totals[gpu_id] += found["n"]
        needed = max(1, int(window * 60 / resolution * COVERAGE))
        for gpu in members:
            row = stats.get((gpu.pk, gpu.launch_id, gpu.namespace))
            idle = (
                row is not None
                and row["n"] == totals[gpu.pk]  # the same holder for every sample of the window
                and row["readings"] >= needed
                and row["readings"] == row["n"]  # a minute without a reading proves nothing
                and row["first"] <= since + timedelta(seconds=resolution)  # held since the window began
                and row["peak"] is not None
                and row["peak"] < threshold
            )
            verdicts.append(
                Verdict(
                    gpu, policies[gpu.project_id], idle, row["peak"] if row else None, row["first"] if row else None
                )
            )
    return verdicts


def _same_holder(finding: IdleFinding, gpu: Gpu) -> bool:
    return finding.launch_id == gpu.launch_id and finding.namespace == gpu.namespace and finding.pod == gpu.pod


def detect(now: datetime | None = None) -> dict[str, int]:
    """Update the idle findings from the samples, then notify and reclaim as the policies
    say (what the `detect_idle_gpus` task runs every minute). Idempotent."""
    now = now or timezone.now()
    counts = {"idle": 0, "opened": 0, "resolved": 0, "notified": 0, "reclaimed": 0}
    gpus = list(Gpu.objects.present().filter(allocated=True))
    verdicts = judge(gpus, now)
    active = {f.gpu_id: f for f in IdleFinding.objects.active().select_related("gpu")}
    launch_ids = {g.launch_id for g in gpus if g.launch_id is not None} | {
        f.launch_id for f in active.values() if f.launch_id is not None
    }
    exempt = {e.launch_id for e in IdleExemption.objects.filter(launch_id__in=launch_ids) if e.is_active(now)}
    # A launch being cancelled (reclaimed, or by its owner) still holds its GPUs for a pass or
    # two: it is neither flagged again nor told again.
    ending = {
        pk
        for pk, status in Launch.objects.filter(pk__in=launch_ids).values_list("pk", "status")
        if status == Status.CANCELLING or status not in LIVE
    }
    for verdict in verdicts:
        gpu = verdict.gpu
        if gpu.launch_id in ending:
            continue
        finding = active.get(gpu.pk)
        if finding is not None and not _same_holder(finding, gpu):
            _resolve(finding, now, "the GPU changed hands")
            counts["resolved"] += 1
            active.pop(gpu.pk)
            finding = None
        if not verdict.idle:
            if finding is not None:
                peak = f"{verdict.peak:.0f} %" if verdict.peak is not None else "no readings"
                _resolve(finding, now, f"busy again (peak {peak})")
                counts["resolved"] += 1
                active.pop(gpu.pk)
            continue
        counts["idle"] += 1
        status = FindingStatus.EXEMPT if gpu.launch_id in exempt else None
        if finding is None:
            finding = _open_finding(
                gpu=gpu,
                launch_id=gpu.launch_id,
                project_id=gpu.project_id,
                team_id=gpu.team_id,
                namespace=gpu.namespace,
                pod=gpu.pod,
                status=status or FindingStatus.OPEN,
                idle_since=verdict.since or now,
                checked_at=now,
                peak_utilization=verdict.peak or 0.0,
                threshold_percent=verdict.policy.threshold_percent,
                window_minutes=verdict.policy.window_minutes,
            )
            if finding is None:
                continue  # another pass opened it a moment ago: it acts on it
            finding.gpu = gpu
            active[gpu.pk] = finding
            counts["opened"] += 1
        else:
            finding.checked_at, finding.peak_utilization = now, verdict.peak or 0.0
            if status is None and finding.status == FindingStatus.EXEMPT:  # the exemption ended
                status = FindingStatus.NOTIFIED if finding.notified_at else FindingStatus.OPEN
            finding.status = status or finding.status
            IdleFinding.objects.filter(pk=finding.pk).update(
                checked_at=now, peak_utilization=finding.peak_utilization, status=finding.status
            )
    # Findings of GPUs that are no longer allocated (released, or gone from the fleet).
    held_now = {v.gpu.pk for v in verdicts}
    for gpu_id, finding in list(active.items()):
        if gpu_id not in held_now:
            _resolve(finding, now, "the GPU was released")
            counts["resolved"] += 1
            active.pop(gpu_id)
    act(active, gpus, exempt, now, counts)
    return counts


def _open_finding(**fields: Any) -> IdleFinding | None:
    """A new active finding, or None when a concurrent pass made the GPU's finding first (the
    database allows one active finding per GPU)."""
    try:
        with transaction.atomic():
            return IdleFinding.objects.create(**fields)
    except IntegrityError:
        return None


def _resolve(finding: IdleFinding, now: datetime, why: str) -> None:
    IdleFinding.objects.filter(pk=finding.pk, status__in=ACTIVE_FINDINGS).update(
        status=FindingStatus.RESOLVED, resolved_at=now, resolution=why[:200]
    )


def act(
    active: dict[int, IdleFinding], gpus: list[Gpu], exempt: set[int], now: datetime, counts: dict[str, int]
) -> None:
    """Notify owners and reclaim, launch by launch."""
    by_launch: dict[int, list[IdleFinding]] = defaultdict(list)
    for finding in active.values():
        if finding.launch_id is not None and finding.status != FindingStatus.EXEMPT:
            by_launch[finding.launch_id].append(finding)
    if not by_launch:
        return
    held: dict[int, int] = defaultdict(int)
    for gpu in gpus:
        if gpu.launch_id is not None:
            held[gpu.launch_id] += 1
    launches = Launch.objects.select_related("project__team", "created_by").in_bulk(list(by_launch))
    policies = {
        p.project_id: p for p in IdlePolicy.objects.filter(project_id__in={la.project_id for la in launches.values()})
    }
    for launch_id, findings in by_launch.items():
        launch = launches.get(launch_id)
        if launch is None or launch.status not in LIVE or launch.status == Status.CANCELLING or launch_id in exempt:
            continue
        policy = policies.get(launch.project_id) or services.policy_for(launch.project)
        if policy.notify and any(f.notified_at is None for f in findings):
            counts["notified"] += services.notify_idle(launch, findings, policy, now)
            for finding in findings:
                finding.notified_at = finding.notified_at or now
        if not policy.reclaim or len(findings) < held[launch_id]:
            continue  # reclaim only a launch all of whose GPUs are idle
        started = min((f.notified_at or f.created_at) for f in findings)
        if now - started < timedelta(minutes=policy.grace_minutes):
            continue
        try:
            if services.reclaim_launch(launch, findings, policy, now):
                counts["reclaimed"] += 1
        except Conflict as exc:  # the launch moved meanwhile: the next pass looks again
            logger.info("not reclaimed: %s", exc.message)
