"""The demo template, shared by seed_demo and the tests."""

from __future__ import annotations

from typing import Any

SKLEARN_DIGITS: dict[str, Any] = {
    "slug": "sklearn-digits",
    "name": "scikit-learn digits classifier",
    "description": "Trains a linear classifier on scikit-learn's bundled digits data set and logs a per-epoch "
    "loss curve, accuracy and f1 to MLflow. Runs in well under a minute on a laptop CPU.",
    "image": "ghcr.io/plinth-dev/plinth:latest",
    "command": [
        "python",
        "apps/launches/examples/sklearn_digits.py",
        "--epochs={epochs}",
        "--learning_rate={learning_rate}",
        "--alpha={alpha}",
        "--register_model={register_model}",
        "--sleep_per_epoch={sleep_per_epoch}",
    ],
    "parameters": {
        "epochs": {"type": "int", "default": 30, "min": 20, "max": 500, "help": "Passes over the training set."},
        "learning_rate": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0},
        "alpha": {"type": "float", "default": 0.0001, "min": 0.0, "max": 1.0, "help": "L2 regularisation."},
        "register_model": {
            "type": "str",
            "default": "",
            "help": "Registered model name for the trained model (empty: don't register).",
        },
        "seed": {"type": "int", "default": 0, "min": 0, "max": 2**31 - 1},
        "sleep_per_epoch": {
            "type": "float",
            "default": 0.2,
            "min": 0.0,
            "max": 5.0,
            "help": "Seconds to pause after each epoch, so the loss curve (and early stopping) can be watched live.",
        },
    },
    # `loss` is logged at every epoch (accuracy and f1 once, at the end): the objective that
    # early stopping can compare step by step.
    "objective": {"metric": "loss", "direction": "min"},
    "default_resources": {"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
    "max_resources": {"cpu": "4", "memory": "8Gi", "gpus": 1},
    "max_runtime_seconds": 900,
    "backends": ["local", "kubernetes"],
}
