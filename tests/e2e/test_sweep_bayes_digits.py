"""The sweep story end to end in a real browser: a member starts a Bayesian (TPE) sweep of
`sklearn-digits` with median early stopping from the page, watches a trial being pruned with
its reason without reloading, and at the end the page shows the best trial, the
optimisation history and which parameters mattered.

Everything on the way is real: the MLflow server, a Celery worker on the configured broker,
the local backend running the training script as processes, and a reconciler passing every
second (what beat does in production). Only the page's own polling shows it to the member.

The search is made deterministic enough to rely on: the form's seed fixes the trials Optuna
asks for (TPE samples its first 10 trials at random, from the seed), and the space's
learning rate is a choice of three values whose loss curves never cross after step 5,
whatever the alpha and the split: 0.01 (best), 0.003 (worse), 1e-5 (clearly bad: from 2.3
to about 2.0 over 30 epochs, where the others end near 0.2 and 0.3). With seed 1982 the
first three trials take 0.003, the next three 0.01 and the last two 1e-5. The trials run one
at a time, and Optuna's median pruner waits for three completed trials, so the first three
always run to their end (with two at a time, the third 0.003 trial could be compared with a
finished 0.01 one and lose, depending on which ends first on a busy machine); each
later 0.01 trial is better than the median of the completed ones at every step (never
pruned, so the six good trials leave enough completed ones for parameter importances), and
the 1e-5 trials are far worse (pruned after `min_steps`). The template's `sleep_per_epoch`
(0.2 s) leaves the reconciler several passes between step 5 and a trial's last epoch.

With PLINTH_SHOTS=<folder> the final page is saved there, else under `<data dir>/e2e/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.launches.models import Launch, Status, Sweep
from apps.projects.models import Project
from tests.e2e.test_launch_page import digits, reconciler, sign_in, worker

# Fixtures of the launch page's test, used here.
__all__ = ["digits", "reconciler", "worker"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.celery,
    pytest.mark.mlflow,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

SHOTS = Path(os.environ.get("PLINTH_SHOTS") or Path(settings.DATA_DIR) / "e2e")
SEED = 1982
GOOD, BAD = (0.003, 0.01), 0.00001
SPACE = '{"learning_rate": [0.003, 0.01, 0.00001], "alpha": {"min": 0.00001, "max": 0.001, "log": true}}'
# What seed 1982 asks for, trial by trial (Optuna's TPE samples its first 10 trials at random).
EXPECTED_RATES = [0.003, 0.003, 0.003, 0.01, 0.01, 0.01, BAD, BAD]
PRUNED_SECONDS = 420  # 6 trials of ~6 s of training after ~5 s of imports, one at a time, on a busy machine
END_SECONDS = 180  # from the first pruned trial to the end of the sweep


def describe(sweep: Sweep, errors: list[str]) -> str:
    trials = Launch.objects.filter(sweep=sweep).order_by("trial")
    rows = [(t.trial, t.parameters.get("learning_rate"), t.status, t.status_reason[:80]) for t in trials]
    sweep.refresh_from_db()
    return f"sweep {sweep.status} ({sweep.status_reason!r}); trials {rows}; reconciler errors {errors[-3:]}"


def test_member_starts_a_bayes_sweep_with_median_pruning_and_watches_trials_pruned_live(
    page: Page,
    live_server: LiveServer,
    ada: User,
    digits: Project,
    mlflow_up: str,
    worker: Any,
    reconciler: list[str],
) -> None:
    sign_in(page, live_server, ada)
    page.goto(f"{live_server.url}/launches/sweeps/")
    page.get_by_role("link", name="New sweep").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New sweep: choose a template")
    page.get_by_role("link", name="Sweep sklearn-digits").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sweep scikit-learn digits classifier")

    # The template's per-step objective is proposed: early stopping can compare it.
    expect(page.get_by_label("Metric")).to_have_value("loss")
    expect(page.get_by_label("Direction")).to_have_value("min")
    page.get_by_label("Strategy").select_option("bayes")
    page.get_by_label("Search space (JSON)").fill(SPACE)
    page.get_by_label("Max trials").fill("8")
    page.get_by_label("Parallelism").fill("1")
    page.get_by_label("Early stopping").select_option("median")
    page.get_by_label("Minimum steps").fill("5")
    page.get_by_label("Seed").fill(str(SEED))
    page.get_by_role("button", name="Start sweep").click()

    expect(page).to_have_url(re.compile(rf"^{re.escape(live_server.url)}/launches/sweeps/\d+/$"))
    sweep = Sweep.objects.get()
    assert (sweep.strategy, sweep.metric, sweep.direction, sweep.seed) == ("bayes", "loss", "min", SEED)
    assert sweep.early_stopping == {"type": "median", "min_steps": 5}
    expect(page.get_by_text("Sweep started: 8 trials, 1 at a time.")).to_be_visible()
    expect(page.get_by_text("no trial will be stopped early")).to_have_count(0)  # loss is the per-step metric
    # A flag on the window survives htmx swaps but not a page load: proof nothing reloaded.
    page.evaluate("() => { window.__plinthSamePage = true; }")

    live = page.locator("#sweep")
    rows = live.locator("table tbody tr")
    pruned = rows.filter(has=page.locator(".status-pruned"))
    try:
        expect(pruned.first).to_be_visible(timeout=PRUNED_SECONDS * 1000)
    except AssertionError:
        raise AssertionError(f"no trial pruned on the page: {describe(sweep, reconciler)}") from None
    # Its reason is on its row: the median it was compared with and its own best so far.
    expect(pruned.first.locator(".trial-reason")).to_contain_text(
        re.compile(r"median of completed trials at step \d+ was [\d.]+, best so far of this trial [\d.]+")
    )
    assert page.evaluate("() => window.__plinthSamePage === true"), "the page reloaded"

    try:
        expect(live.locator("[data-status]")).to_have_attribute("data-status", "succeeded", timeout=END_SECONDS * 1000)
    except AssertionError:
        raise AssertionError(f"the sweep did not end: {describe(sweep, reconciler)}") from None
    trials = list(Launch.objects.filter(sweep=sweep).order_by("trial"))
    assert [t.parameters["learning_rate"] for t in trials] == EXPECTED_RATES, describe(sweep, reconciler)
    # The good trials ran to their end; the bad ones were stopped after min_steps, before their last epoch.
    good = [t for t in trials if t.parameters["learning_rate"] in GOOD]
    assert all(t.status == Status.SUCCEEDED for t in good), describe(sweep, reconciler)
    bad = [t for t in trials if t.parameters["learning_rate"] == BAD]
    assert any(t.status == Status.PRUNED for t in bad), describe(sweep, reconciler)
    for trial in bad:
        if trial.status == Status.PRUNED:
            steps = sorted(int(step) for step in trial.objective_curve)
            assert 5 <= steps[-1] < 29, (trial.trial, steps)

    # The end, in the same page: the best trial, the history, what mattered.
    expect(live.locator("[data-progress]")).to_have_text("8 of 8")
    expect(live.locator("[data-best]")).to_contain_text("Best so far by loss (min)")
    best = min((t for t in trials if t.status == Status.SUCCEEDED), key=lambda t: t.objective or 99.0)
    expect(live.locator("[data-best] a")).to_have_attribute("href", f"/launches/{best.pk}/")
    expect(live.locator("[data-savings]")).to_contain_text(re.compile(r"[12] trials? pruned"))
    for chart in ("#sweep-history", "#sweep-importances", "#sweep-chart"):
        expect(live.locator(f"{chart}.chart[data-chart] .main-svg").first).to_be_attached()
    expect(live.get_by_role("heading", name="Which parameters mattered")).to_be_visible()
    expect(live.locator("#sweep-importances")).to_contain_text("learning_rate")
    assert page.evaluate("() => window.__plinthSamePage === true"), "the page reloaded"

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "sweep-bayes-digits.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nsweep page: {shot}; {describe(sweep, reconciler)}")
