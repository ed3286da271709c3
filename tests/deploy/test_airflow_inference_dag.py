"""The Airflow inference DAGs (deploy/airflow/sa2_inference_dag.py), parsed by a real
Airflow DagBag (no database): plan -> one mapped ``segment`` task per part (``.expand``)
-> merge. The opt-in run (``-m airflow``) is tests/integration/test_airflow_dags_test.py.
"""

from __future__ import annotations

import textwrap

from test_airflow_dag import parse_dags

_PARSE = textwrap.dedent("""
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        if not dag_id.startswith("sa2_inference_"):
            continue
        out["dags"][dag_id] = {
            "timetable": type(dag.timetable).__name__, "max_active_runs": dag.max_active_runs,
            "params": {k: dag.params[k] for k in dag.params},
            "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
            "mapped": {t.task_id: type(t).__name__.endswith("MappedOperator")
                       for t in dag.tasks},
            "expand": {t.task_id: sorted(t.op_kwargs_expand_input.value)
                       for t in dag.tasks if hasattr(t, "op_kwargs_expand_input")},
            "retries": {t.task_id: t.retries for t in dag.tasks}}
    print("DAGBAG " + json.dumps(out, default=str))
""")


def test_one_inference_dag_per_dataset_fanning_out_over_mapped_parts(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    bag = parse_dags(tmp_path, project, "synthetic,glas", _PARSE)
    assert bag["errors"] == {}
    assert set(bag["dags"]) == {"sa2_inference_synthetic", "sa2_inference_glas"}
    for dag in bag["dags"].values():
        assert dag["downstream"] == {"plan": ["segment"], "segment": ["merge"], "merge": []}
        assert dag["mapped"] == {"plan": False, "segment": True, "merge": False}
        assert dag["expand"] == {"segment": ["part"]}   # segment.expand(part=plan(...))
        assert dag["retries"]["segment"] == 2          # a failed part is retried ...
        assert dag["retries"]["plan"] == dag["retries"]["merge"] == 0
        assert dag["max_active_runs"] == 1             # ... and runs never share a folder
        assert dag["timetable"] == "NullTimetable"     # triggered, not scheduled
        assert dag["params"] == {"num_parts": 0}       # 0: the dataset's inference.num_parts
