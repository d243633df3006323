#!/usr/bin/env python3
"""Writes KDL projects' MLflow stores with real MLflow (run by .venv-mlflow's Python, not the stack's).

Usage: seed_mlflow.py < SPECS.json > RESULTS.json

SPECS is a JSON list, one object per store: path (the mlflow.db to create), project, members (user names),
experiments, runs_per_experiment, steps (metric history length), wal (bool), local (null, "mlruns" or
"artifacts": the folder beside mlflow.db that holds the store's artifacts; otherwise artifacts live in MinIO,
as KDL configures them), artifact_bytes, seed. MLflow's own tracking and registry client writes each store
through its SQLAlchemy store (the code `mlflow server` runs): migrations, experiments with tags (the last of
three or more deleted), runs with params, tags, metric histories and an end status, local artifacts, a
registered model with a version. A WAL store keeps its last writes in mlflow.db-wal, as a live server leaves it.
RESULTS is a JSON list of {table: rows} per store (tables with rows only).
"""
import json
import os
import random
import sqlite3
import sys
import tempfile
import time

WORDS = ("churn", "forecast", "fraud", "vision", "nlp", "sales", "retention", "pricing", "demand", "anomaly")


def quiet_mlflow():
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///:memory:")  # never ./mlruns
    os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def artifact_location(spec, experiment):
    folder = os.path.dirname(spec["path"])
    if spec.get("local"):
        return os.path.join(folder, spec["local"], str(experiment))
    return f"s3://kdl-{spec['project']}/mlflow-artifacts/{experiment}"


def log_runs(client, spec, rng, experiment_id, experiment_number, scratch):
    from mlflow.entities import Metric, Param, RunTag

    started = int(time.time() * 1000) - 86_400_000 * (10 - experiment_number)
    last_run = None
    for r in range(spec["runs_per_experiment"]):
        member = spec["members"][rng.randrange(len(spec["members"]))]
        start = started + r * 900_000
        run = client.create_run(experiment_id, start_time=start, run_name=f"run-{r}", tags={
            "mlflow.user": member, "mlflow.source.type": "LOCAL",
            "mlflow.source.name": f"/home/{member}/repos/{spec['project']}/train.py",
            "mlflow.source.git.commit": rng.randbytes(20).hex()})
        run_id = run.info.run_id
        params = [Param("learning_rate", str(rng.choice([0.1, 0.01, 0.001]))), Param("max_depth", str(rng.randint(3, 12))),
                  Param("model", rng.choice(["xgboost", "random_forest", "lightgbm"]))]
        metrics = [Metric(key, rng.random(), start + step * 1000, step)
                   for key in ("loss", "accuracy", "val_loss") for step in range(spec["steps"])]
        client.log_batch(run_id, params=params, tags=[RunTag("kdl.project", spec["project"])])
        for chunk in range(0, len(metrics), 1000):  # MLflow's limit per batch
            client.log_batch(run_id, metrics=metrics[chunk:chunk + 1000])
        if spec.get("local") and experiment_number == 1 and r < 2:
            model = os.path.join(scratch, "model.pkl")
            with open(model, "wb") as out:
                out.write(rng.randbytes(spec["artifact_bytes"]))
            client.log_artifact(run_id, model, "model")
            client.log_text(run_id, "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n", "model/MLmodel")
        status = rng.choice(["FINISHED", "FINISHED", "FAILED", "RUNNING"])
        if status != "RUNNING":
            client.set_terminated(run_id, status=status, end_time=start + 600_000)
        last_run = run_id
    return last_run


def write_store(spec):
    from mlflow import MlflowClient

    rng = random.Random(spec["seed"])
    uri = f"sqlite:///{spec['path']}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model_run = None
    experiments = spec["experiments"]
    with tempfile.TemporaryDirectory() as scratch:
        for e in range(1, experiments + 1):
            experiment_id = client.create_experiment(f"{spec['project']}-{rng.choice(WORDS)}-{e}",
                                                     artifact_location=artifact_location(spec, e),
                                                     tags={"mlflow.note.content": f"experiment {e} of {spec['project']}"})
            last = log_runs(client, spec, rng, experiment_id, e, scratch)
            model_run = model_run or last
            if e == experiments and experiments > 2:
                client.delete_experiment(experiment_id)
    name = f"{spec['project']}-model"
    client.create_registered_model(name, description=f"{spec['project']}'s production model")
    client.create_model_version(name, f"runs:/{model_run}/model", run_id=model_run)
    return client


def count_rows(connection):
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    counts = {table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}
    return {table: rows for table, rows in counts.items() if rows}


def seed_wal_tail(spec):
    """Switches the store to WAL, then a child writes through MLflow and exits without closing anything: its rows
    stay in mlflow.db-wal (with the -shm), as a running server leaves them. The child reports the row counts."""
    with sqlite3.connect(spec["path"]) as db:
        db.execute("PRAGMA journal_mode=WAL")
    db.close()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(reader)
            client = write_store(spec)
            experiment = next(e for e in client.search_experiments() if e.experiment_id != "0")
            client.set_experiment_tag(experiment.experiment_id, "kdl.wal-only", "written after the last checkpoint")
            run = client.search_runs([experiment.experiment_id], max_results=1)[0]
            client.log_metric(run.info.run_id, "wal_metric", 1.0, step=0)
            live = sqlite3.connect(spec["path"])
            os.write(writer, json.dumps(count_rows(live)).encode())
            code = 0
        finally:
            os._exit(code)  # no close, no checkpoint
    os.close(writer)
    with os.fdopen(reader) as pipe:
        counts = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not counts:
        raise RuntimeError(f"the WAL writer of {spec['path']} failed")
    return json.loads(counts)


def main():
    quiet_mlflow()
    specs = json.load(sys.stdin)
    results = []
    for spec in specs:
        os.makedirs(os.path.dirname(spec["path"]), exist_ok=True)
        if spec.get("wal"):
            # MLflow writes the store, then the WAL tail, in a child whose connections are never closed.
            # The parent must not open the store through MLflow first (its pool would checkpoint on exit).
            results.append(seed_wal_tail(spec))
            continue
        write_store(spec)
        with sqlite3.connect(spec["path"]) as db:
            results.append(count_rows(db))
        db.close()
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
