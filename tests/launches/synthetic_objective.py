"""A synthetic training script with a known optimum, for real sweeps that must finish fast.

    loss(x, y) = 1 + (x - 0.3)^2 + (y + 0.5)^2     minimum 1.0 at x = 0.3, y = -0.5

    python tests/launches/synthetic_objective.py --x=0.1 --y=0.2 --steps=5

It logs `loss` at steps 0..steps-1, falling from 4 times the final value to `loss(x, y)` at
the last step, into the MLflow run named by MLFLOW_RUN_ID on the server at
MLFLOW_TRACKING_URI (the variables every job gets). To keep a trial short it talks to
MLflow's REST API with the standard library alone (no MLflow client to import) and sends
the whole curve in one `runs/log-batch` request, as a script that buffers its metrics
does. Exits 1 with MLflow's answer when it refuses the request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

OPTIMUM = 1.0  # the lowest loss there is
BEST_X, BEST_Y = 0.3, -0.5


def loss(x: float, y: float) -> float:
    """The final loss at (x, y): 1.0 at the optimum, growing quadratically away from it."""
    return 1.0 + (x - BEST_X) ** 2 + (y - BEST_Y) ** 2


def curve(x: float, y: float, steps: int) -> list[float]:
    """The loss at each step 0..steps-1 (`steps` values, the last one `loss(x, y)`)."""
    final = loss(x, y)
    return [final * (1.0 + 3.0 * (1.0 - step / max(steps - 1, 1)) ** 2) for step in range(steps)]


def log_curve(tracking_uri: str, run_id: str, key: str, values: list[float]) -> None:
    """POST `values` as the points of metric `key` at steps 0, 1, ... to MLflow's
    `runs/log-batch` (one request; at most 1,000 points, MLflow's limit; timestamp: now, in
    ms). Raises urllib.error.HTTPError when MLflow refuses it, URLError when it cannot be
    reached."""
    now = int(time.time() * 1000)
    metrics = [{"key": key, "value": value, "timestamp": now, "step": step} for step, value in enumerate(values)]
    body = {"run_id": run_id, "metrics": metrics}
    request = urllib.request.Request(
        f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/runs/log-batch",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--x", type=float, default=0.0)
    parser.add_argument("--y", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=5, help="points to log, at most 1,000")
    args = parser.parse_args()
    tracking_uri, run_id = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_RUN_ID"]
    values = curve(args.x, args.y, args.steps)
    for step, value in enumerate(values):
        print(f"step {step + 1}/{args.steps}  loss {value:.4f}", flush=True)
    try:
        log_curve(tracking_uri, run_id, "loss", values)
    except urllib.error.HTTPError as exc:
        print(f"MLflow refused the curve: {exc.code} {exc.read().decode(errors='replace')}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
