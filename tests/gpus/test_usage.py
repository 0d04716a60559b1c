"""Usage arithmetic with numbers checked by hand: GPU-hours allocated and used from raw
samples, from hourly roll-ups and from a mix of both (the same answer), cost from prices,
retention, the usage API, the CSV export and the fleet API's scoping.

The history (resolution 60 s), from H0 (an hour boundary):
  g1 A100  H0:00-H1:29  held by ada's launch in demo/demo at 40 %   -> 1.5 h allocated, 0.6 used
           H1:30-H1:59  free, 0 %                                   -> not allocated
  g2 H100  H0:00-H1:59  held by omar's launch in other/other at 75 % -> 2.0 h allocated, 1.5 used
  g3 A100  H0:00-H0:59  held by a pod in namespace research at 10 % -> 1.0 h allocated, 0.1 used
Prices: A100 2.50/GPU-hour, H100 4.00 -> demo 3.75, other 8.00, research 2.50."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.core.filters import local_midnight
from apps.gpus import services
from apps.gpus.models import Gpu, GpuHourly, GpuSample
from apps.gpus.store import insert_samples, prune, roll_up
from apps.gpus.usage import Period, heatmap, launch_series, launch_totals, usage_report, usage_timeline
from apps.launches.models import Launch, Status
from apps.projects.models import Project
from tests.compute.fakes import make_launch
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db


class History:
    def __init__(self, start: datetime, demo: Launch, other: Launch) -> None:
        self.h0 = start
        self.demo, self.other = demo, other
        self.g1 = Gpu.objects.create(node="n1", index=0, product="NVIDIA A100", memory_total_mib=81920)
        self.g2 = Gpu.objects.create(node="n1", index=1, product="NVIDIA H100", memory_total_mib=81920)
        self.g3 = Gpu.objects.create(node="n2", index=0, product="NVIDIA A100", memory_total_mib=81920)
        rows = []
        for minute in range(120):
            at = start + timedelta(minutes=minute)
            if minute < 90:
                rows.append(self._row(self.g1, at, 40.0, demo))
            else:
                rows.append((self.g1.pk, at, 0.0, 0, 60.0, None, False, None, None, None, ""))
            rows.append(self._row(self.g2, at, 75.0, other))
            if minute < 60:
                rows.append((self.g3.pk, at, 10.0, 500, 70.0, None, True, None, None, None, "research"))
        insert_samples(rows)
        self.period = Period(start, start + timedelta(hours=2))

    @staticmethod
    def _row(gpu: Gpu, at: datetime, util: float, launch: Launch) -> tuple[Any, ...]:
        project = launch.project
        return (gpu.pk, at, util, 2000, 250.0, None, True, launch.pk, project.pk, project.team_id, project.namespace)


@pytest.fixture
def history(project: Project, other_project: Project, ada: User, omar: User) -> History:
    # Yesterday 10:00-12:00 in the portal's time zone: always in the past, and never across
    # midnight, so "the day of H0" (the CSV export's filter) holds the whole history.
    start = local_midnight(timezone.localdate() - timedelta(days=1)) + timedelta(hours=10)
    demo = make_launch(project, ada, status=Status.RUNNING, gpus=1, created_at=start - timedelta(minutes=5))
    other = make_launch(other_project, omar, status=Status.RUNNING, gpus=1)
    return History(start, demo, other)


def figures(rows: list[Any]) -> dict[str, tuple[float, float, Any]]:
    return {
        r.key: (
            round(r.allocated_hours, 6),
            round(r.used_hours, 6),
            r.cost.quantize(Decimal("0.01")) if r.cost else None,
        )
        for r in rows
    }


EXPECTED = {"demo/demo": (1.5, 0.6, None), "other/other": (2.0, 1.5, None), "ns:research": (1.0, 0.1, None)}


def test_gpu_hours_from_raw_samples(history: History) -> None:
    assert figures(usage_report(history.period, "project", None, include_foreign=True)) == EXPECTED
    by_team = figures(usage_report(history.period, "team", None, include_foreign=False))
    assert by_team == {"demo": (1.5, 0.6, None), "other": (2.0, 1.5, None)}


def test_roll_ups_hold_the_same_numbers_as_the_samples(history: History) -> None:
    rolled = roll_up(now=history.h0 + timedelta(hours=2, minutes=5))
    assert rolled["hours"] == 2 and rolled["until"] == history.h0 + timedelta(hours=2)
    g1_second_hour = {
        (r.allocated, r.launch_id): (r.samples, r.seconds, r.util_sum, r.used_seconds)
        for r in GpuHourly.objects.filter(gpu=history.g1, hour=history.h0 + timedelta(hours=1))
    }
    assert g1_second_hour == {(True, history.demo.pk): (30, 1800, 1200.0, 720.0), (False, None): (30, 1800, 0.0, 0.0)}
    assert figures(usage_report(history.period, "project", None, include_foreign=True)) == EXPECTED
    again = roll_up(now=history.h0 + timedelta(hours=2, minutes=10))
    assert (again["hours"], again["rows"]) == (1, 3), "re-rolls the last hour only (g1 held, g1 free, g2)"


def test_a_period_half_rolled_up_adds_up_the_same(history: History) -> None:
    roll_up(now=history.h0 + timedelta(hours=1, minutes=30))  # H0 rolled, H1 still raw
    assert GpuHourly.objects.filter(hour=history.h0 + timedelta(hours=1)).count() == 0
    assert figures(usage_report(history.period, "project", None, include_foreign=True)) == EXPECTED


def test_cost_is_allocated_hours_times_the_models_price(history: History, root: User) -> None:
    services.set_gpu_price(root, "NVIDIA A100", "2.50")
    services.set_gpu_price(root, "NVIDIA H100", Decimal("4"))
    rows = figures(usage_report(history.period, "project", None, include_foreign=True))
    assert rows == {
        "demo/demo": (1.5, 0.6, Decimal("3.75")),
        "other/other": (2.0, 1.5, Decimal("8.00")),
        "ns:research": (1.0, 0.1, Decimal("2.50")),
    }


def test_old_samples_go_after_roll_up_and_the_report_stays(history: History, settings: Any) -> None:
    now = history.h0 + timedelta(days=8)
    roll_up(now=history.h0 + timedelta(hours=3))
    removed = prune(now=now)
    assert removed["samples"] == 120 + 120 + 60 and not GpuSample.objects.exists()
    assert figures(usage_report(history.period, "project", None, include_foreign=True)) == EXPECTED


def test_samples_not_rolled_up_are_never_pruned(history: History) -> None:
    assert prune(now=history.h0 + timedelta(days=30))["samples"] == 0


def test_the_heatmap_is_the_hourly_mean_per_gpu(history: History) -> None:
    now = history.h0 + timedelta(hours=1, minutes=59)
    columns, cells = heatmap([history.g1.pk, history.g2.pk], hours=2, now=now)
    assert columns == [history.h0, history.h0 + timedelta(hours=1)]
    assert cells == {history.g1.pk: [40.0, 20.0], history.g2.pk: [75.0, 75.0]}
    roll_up(now=history.h0 + timedelta(hours=1, minutes=5))
    assert heatmap([history.g1.pk, history.g2.pk], hours=2, now=now)[1] == cells


def test_the_timeline_sums_per_day(history: History) -> None:
    points = usage_timeline(history.period, None)
    assert sum(p[1] for p in points) == pytest.approx(3.5) and sum(p[2] for p in points) == pytest.approx(2.1)


def test_a_launch_totals_and_series(history: History) -> None:
    totals = launch_totals(history.demo)
    assert (round(totals.allocated_hours, 6), round(totals.used_hours, 6)) == (1.5, 0.6)
    series = launch_series(history.demo.pk, history.h0, history.h0 + timedelta(minutes=90))
    trace = series["gpus"]["n1/0"]
    assert series["step"] == "minute" and len(trace["t"]) == 90 and set(trace["util"]) == {40.0}


# --- the API and the CSV export ---------------------------------------------------------------
def usage_url(history: History, **extra: str) -> str:
    query = {"start": history.h0.isoformat(), "end": (history.h0 + timedelta(hours=2)).isoformat(), **extra}
    return "/api/v1/gpus/usage/?" + "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in query.items())


def test_the_usage_api_gives_a_lead_their_teams_and_an_admin_everyone(history: History, lin: User, root: User) -> None:
    body = api_for(lin).get(usage_url(history, group_by="project")).json()
    assert [(g["group"], g["gpu_hours_allocated"], g["gpu_hours_used"]) for g in body["groups"]] == [
        ("demo/demo", 1.5, 0.6)
    ]
    assert body["groups"][0]["utilization_percent"] == 40.0 and body["total"]["gpu_hours_allocated"] == 1.5
    admin = api_for(root).get(usage_url(history, group_by="team")).json()
    assert [g["group"] for g in admin["groups"]] == ["demo", "other", "ns:research"]
    assert admin["total"]["gpu_hours_allocated"] == 4.5


@pytest.mark.parametrize(("query", "field"), [({"group_by": "user"}, "group_by"), ({"start": "yesterday"}, "start")])
def test_the_usage_api_answers_400_for_bad_input(
    lin: User, project: Project, query: dict[str, str], field: str
) -> None:
    response = api_for(lin).get("/api/v1/gpus/usage/", query)
    assert response.status_code == 400 and field in response.json()


def test_members_get_403_from_the_usage_api(ada: User) -> None:
    assert api_for(ada).get("/api/v1/gpus/usage/").status_code == 403


def test_a_lead_exports_their_teams_gpu_hours_as_csv(history: History, lin: User, root: User) -> None:
    services.set_gpu_price(root, "NVIDIA A100", "2.5")
    day = history.h0.date().isoformat()
    response = client_for(lin).get("/gpus/usage.csv", {"start": day, "end": day, "group_by": "project"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["group"], r["gpu_hours_allocated"], r["gpu_hours_used"], r["cost"], r["currency"]) for r in rows] == [
        ("demo/demo", "1.5000", "0.6000", "3.75", "USD")
    ]


def test_the_fleet_api_shows_free_gpus_and_the_users_teams(history: History, lin: User, omar: User, root: User) -> None:
    for gpu, launch in ((history.g1, history.demo), (history.g2, history.other)):
        Gpu.objects.filter(pk=gpu.pk).update(
            allocated=True, launch=launch, project=launch.project, team=launch.project.team, utilization=40
        )
    Gpu.objects.filter(pk=history.g3.pk).update(allocated=False)
    seen = {u.username: api_for(u).get("/api/v1/gpus/").json()["results"] for u in (lin, omar, root)}
    assert [(g["node"], g["index"]) for g in seen["lin"]] == [("n1", 0), ("n2", 0)]
    assert seen["lin"][0]["allocated_to"] == {
        "launch": history.demo.pk,
        "user": "ada",
        "project": "demo/demo",
        "team": "demo",
        "namespace": "",
        "pod": "",
    }
    assert seen["lin"][1]["allocated_to"] is None
    assert [(g["node"], g["index"]) for g in seen["omar"]] == [("n1", 1), ("n2", 0)]
    assert len(seen["root"]) == 3
    assert set(seen["root"][0]) >= {"node", "index", "uuid", "product", "model", "memory_total", "allocated_to",
                                    "utilization", "memory_used", "sampled_at"}  # fmt: skip
    # `model` is the deprecated alias of `product` for one release: the same value.
    by_node = {(g["node"], g["index"]): g for g in seen["root"]}
    assert by_node[("n1", 1)]["product"] == by_node[("n1", 1)]["model"] == "NVIDIA H100"
