"""``kedro run --pipelines retraining --env <dataset>``: the retraining sequence as a pipeline."""
