"""Fixtures of the inference tests (see inference_helpers.py)."""

from inference_helpers import tiny_model  # noqa: F401 - the fixture
