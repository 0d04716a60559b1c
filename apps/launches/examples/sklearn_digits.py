"""The demo template `sklearn-digits`: trains a linear classifier on scikit-learn's bundled
digits data set (no download) and logs to MLflow with the plain client.

It is an ordinary training script: run by Plinth it finds MLFLOW_TRACKING_URI and
MLFLOW_RUN_ID in its environment, so `mlflow.start_run()` logs into the run the portal
created. Logged: params, a per-epoch `loss` curve, `accuracy`, `f1`; with
--register_model NAME the model becomes a new version of that registered model.
"""

from __future__ import annotations

import argparse
import time


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=0.0001)
    parser.add_argument("--register_model", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sleep_per_epoch", type=float, default=0.0, help="slow it down to watch it run")
    return parser.parse_args()


def main() -> None:
    args = parse()
    import mlflow
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score, f1_score, log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    classes = np.unique(digits.target)
    model = SGDClassifier(
        loss="log_loss", alpha=args.alpha, learning_rate="constant", eta0=args.learning_rate, random_state=args.seed
    )
    with mlflow.start_run() as run:
        print(f"run {run.info.run_id}: {len(x_train)} training images, {args.epochs} epochs", flush=True)
        mlflow.log_params(
            {"epochs": args.epochs, "learning_rate": args.learning_rate, "alpha": args.alpha, "seed": args.seed}
        )
        for epoch in range(args.epochs):
            model.partial_fit(x_train, y_train, classes=classes)
            loss = log_loss(y_test, model.predict_proba(x_test), labels=classes)
            mlflow.log_metric("loss", float(loss), step=epoch)
            print(f"epoch {epoch + 1:3d}/{args.epochs}  loss {loss:.4f}", flush=True)
            if args.sleep_per_epoch:
                time.sleep(args.sleep_per_epoch)
        predictions = model.predict(x_test)
        accuracy = accuracy_score(y_test, predictions)
        f1 = f1_score(y_test, predictions, average="macro")
        mlflow.log_metrics({"accuracy": float(accuracy), "f1": float(f1)})
        print(f"accuracy {accuracy:.4f}  f1 {f1:.4f}", flush=True)
        if args.register_model:
            import mlflow.sklearn

            mlflow.sklearn.log_model(
                model, name="model", registered_model_name=args.register_model, input_example=x_test[:2]
            )
            # Tag the model with the launch's project so it shows up in Plinth at once (the
            # registry's reconciler would adopt it within a minute anyway).
            project = mlflow.get_run(run.info.run_id).data.tags.get("plinth.project")
            if project:
                mlflow.MlflowClient().set_registered_model_tag(args.register_model, "plinth.project", project)
            print(f"registered a new version of {args.register_model}", flush=True)


if __name__ == "__main__":
    main()
