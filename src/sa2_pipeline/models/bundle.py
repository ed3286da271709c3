"""A trained model as one self-describing object: architecture, weights, input convention.

The bundle is a plain dict (``torch.save``-able, no pickled classes) so a checkpoint can be
rebuilt anywhere with ``model_from_bundle`` -- in the evaluation stage, in an MLflow pyfunc
in a fresh process, or by a user -- without knowing which run produced it.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from sa2_pipeline.models import create_model
from sa2_pipeline.user_errors import UserError

BUNDLE_FORMAT = "sa2-pipeline/model-bundle/1"


def make_bundle(
    *,
    model_name: str,
    init_kwargs: dict[str, Any],
    state_dict: dict[str, Any],
    patch_size: int,
    channel_order: str = "rgb",
    resize_to: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a bundle.

    Args:
        model_name: Name for :func:`sa2_pipeline.models.create_model`.
        init_kwargs: Constructor arguments (``in_channels``, ``num_classes``...).
        state_dict: Weights on the CPU.
        channel_order: ``"rgb"`` or ``"bgr"``: what the network was trained on. Inputs are
            always uint8 scaled to [0, 1], with no mean/std normalisation.
        patch_size: Sliding-window tile size for inference on large images.
        resize_to: Set when the network was trained on images resized to a square side
            (the paper's 224): inference resizes every image to it and the probabilities
            back to the image's size. ``None``: native resolution, sliding window.
        metadata: Free-form provenance (best epoch, validation Dice, run id, fingerprint).
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    return {
        "format": BUNDLE_FORMAT,
        "model_name": model_name,
        "init_kwargs": dict(init_kwargs),
        "state_dict": state_dict,
        "input_convention": {
            "channel_order": channel_order,
            "dtype": "uint8",
            "scale": "divide by 255 to [0, 1]",
            "normalisation": "none",
        },
        "patch_size": int(patch_size),
        "resize_to": None if resize_to is None else int(resize_to),
        "metadata": dict(metadata or {}),
    }


def validate_bundle(bundle: Any, source: str = "model bundle") -> dict[str, Any]:
    """Check that ``bundle`` is a model bundle; the error names ``source``."""
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise ValueError(
            f"{source}: not a sa2-pipeline model bundle (expected format {BUNDLE_FORMAT!r})"
        )
    missing = [k for k in ("model_name", "init_kwargs", "state_dict") if k not in bundle]
    if missing:
        raise ValueError(f"{source}: model bundle lacks {missing}")
    return bundle


class BundleLoadError(UserError, ValueError):
    """A model file that cannot be read as a bundle; the message names the file and why."""


def load_bundle_file(path: str | PathLike[str]) -> Any:
    """Read a model bundle (or a fold ensemble of bundles) from ``path``, weights-only.

    Every model file the project reads goes through here: ``torch.load(weights_only=True)``
    rebuilds tensors, containers, numbers and strings only, so a planted pickle (a crafted
    ``model_bundle.pt`` in the registry or a cache) is refused before any of its code runs.

    Raises:
        BundleLoadError: The file is unreadable, holds objects a bundle never holds, or is
            not a bundle; the message names ``path``.
    """
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).strip().splitlines()
        reason = lines[-1][:300] if lines else "refused"
        raise BundleLoadError(f"{path}: refused to load: it holds objects no model bundle "
                              f"holds, such as code to run ({reason})") from err
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise BundleLoadError(f"{path}: not a readable model bundle "
                              f"({type(err).__name__}: {err})") from err
    try:
        for member in members_of(obj):
            validate_bundle(member, str(path))
    except ValueError as err:
        raise BundleLoadError(str(err)) from err
    if is_ensemble(obj) and not obj:
        raise BundleLoadError(f"{path}: an empty ensemble (no model bundle in it)")
    return obj


def model_from_bundle(bundle: dict[str, Any], source: str = "model bundle"):
    """Rebuild the network in eval mode with the bundle's weights (strict load)."""

    validate_bundle(bundle, source)
    model = create_model(bundle["model_name"], **bundle["init_kwargs"])
    model.load_state_dict(bundle["state_dict"], strict=True)
    return model.eval()


def is_ensemble(obj: Any) -> bool:
    """An ensemble is a list of bundles whose probabilities are averaged."""
    return isinstance(obj, list | tuple)


def members_of(obj: Any) -> list[dict[str, Any]]:
    """The bundles of an ensemble (or the single bundle as a one-member list)."""
    return list(obj) if is_ensemble(obj) else [obj]


def bundle_digest(obj: Any) -> str:
    """SHA-256 of what a bundle (or an ensemble) computes: architecture, constructor
    arguments, input convention, inference settings and every weight, bit for bit.

    ``metadata`` (run ids, epochs, timestamps) is left out, so the same weights produced
    by two runs digest the same; an ensemble digests its members in order.
    """
    import hashlib
    import json

    import numpy as np
    import torch

    h = hashlib.sha256()
    for bundle in members_of(obj):
        described = {k: bundle.get(k) for k in ("format", "model_name", "init_kwargs",
                                                "input_convention", "patch_size", "resize_to")}
        h.update(json.dumps(described, sort_keys=True, default=str).encode())
        for name in sorted(bundle["state_dict"]):
            tensor = bundle["state_dict"][name]
            # Raw bytes through a uint8 view: any dtype, bf16 included, without a copy.
            array = (tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
                     if isinstance(tensor, torch.Tensor) else np.ascontiguousarray(tensor))
            h.update(f"{name}|{getattr(tensor, 'dtype', array.dtype)}|"
                     f"{tuple(tensor.shape)}|".encode())
            h.update(array.tobytes())
    return h.hexdigest()

