"""``kedro run --pipelines inference``: segment every image in a folder (not in __default__)."""
