"""Scheduled retraining on new slides: detect, verify, version, retrain, gate, promote.

Plain Python (no Kedro): :mod:`.detect` finds new or changed annotated slides by content
hash, :mod:`.versioning` is the DVC step, :mod:`.record` the retraining record and
:mod:`.orchestrate` the whole sequence that ``sa2-pipeline retrain`` runs. The pieces it
builds on live lower in the library: the file locks in :mod:`sa2_pipeline.locks`, the
statistical promotion gate in :mod:`sa2_pipeline.metrics.promotion`, registration and
promotion in :mod:`sa2_pipeline.tracking`. See docs/retraining.md.
"""
