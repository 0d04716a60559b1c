"""The demo template `quadratic`: a fast synthetic objective with a known optimum, for
trying sweep strategies and early stopping in seconds.

    loss(x, y) = 1 + (x - 0.7)^2 + (y + 0.3)^2     minimum 1.0 at x = 0.7, y = -0.3

It logs a training-like curve of `loss` over `--steps` steps (falling towards the final
value, so a worse trial is worse at every step) with the plain MLflow client: run by
Plinth it finds MLFLOW_TRACKING_URI and MLFLOW_RUN_ID in its environment.
"""

from __future__ import annotations

import argparse
import time

OPTIMUM = 1.0  # the lowest loss there is
BEST_X, BEST_Y = 0.7, -0.3


def loss(x: float, y: float) -> float:
    """The final loss at (x, y): 1.0 at the optimum, growing quadratically away from it."""
    return 1.0 + (x - BEST_X) ** 2 + (y - BEST_Y) ** 2


def curve(x: float, y: float, steps: int) -> list[float]:
    """The loss at each step 0..steps-1: starts at 4 times the final value and falls to it
    at the last step."""
    final = loss(x, y)
    return [final * (1.0 + 3.0 * (1.0 - step / max(steps - 1, 1)) ** 2) for step in range(steps)]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--x", type=float, default=0.0)
    parser.add_argument("--y", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sleep_per_step", type=float, default=0.0, help="slow it down to watch it (or prune it)")
    return parser.parse_args()


def main() -> None:
    args = parse()
    import mlflow

    with mlflow.start_run():
        mlflow.log_params({"x": args.x, "y": args.y, "steps": args.steps})
        for step, value in enumerate(curve(args.x, args.y, args.steps)):
            mlflow.log_metric("loss", value, step=step)
            print(f"step {step + 1:3d}/{args.steps}  loss {value:.4f}", flush=True)
            if args.sleep_per_step:
                time.sleep(args.sleep_per_step)


if __name__ == "__main__":
    main()
