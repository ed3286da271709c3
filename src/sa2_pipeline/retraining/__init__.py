"""Scheduled retraining on new slides: detect, verify, version, retrain, gate, promote.

Plain Python (no Kedro): :mod:`.detect` finds new or changed annotated slides by content
hash, :mod:`.gate` is the statistical promotion gate, :mod:`.locks` the file locks,
:mod:`.versioning` the DVC step, :mod:`.record` the retraining record and
:mod:`.orchestrate` the whole sequence that ``sa2-pipeline retrain`` runs. See
docs/retraining.md.
"""
