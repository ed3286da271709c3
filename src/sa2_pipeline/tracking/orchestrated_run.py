"""The model's one MLflow run when an orchestrator runs its stages as separate tasks.

Kubeflow runs ``data_ingestion`` ... ``reporting`` as one container each; each ``kedro
run`` would open an MLflow run of its own. The first task creates the run here and hands
its id on; every later task sets ``MLFLOW_RUN_ID`` to it, which kedro-mlflow's
``mlflow.start_run`` resumes (docs/kubeflow.md).
"""

from __future__ import annotations

#: Tag naming what created the run (``kubeflow``), so the run says where it came from.
ORCHESTRATOR_TAG = "sa2.orchestrator"


def create_run(experiment_name: str, run_name: str, orchestrator: str) -> str:
    """Create a run in ``experiment_name`` (made if missing) and return its id.

    Uses the tracking URI already set in this process (kedro-mlflow's setup).
    """
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(experiment_name))
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={ORCHESTRATOR_TAG: orchestrator})
    return run.info.run_id
