"""Everything that talks to MLflow: logging, the model registry, the promotion gate."""
