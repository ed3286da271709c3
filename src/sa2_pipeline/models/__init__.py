"""Segmentation models, built by name.

    >>> from sa2_pipeline.models import create_model, list_models
    >>> list_models()
    ['sa2net', 'unet']
    >>> model = create_model("sa2net", in_channels=3, num_classes=1, base_channels=64)

Every model built here carries ``model.model_name`` and ``model.init_kwargs`` (its full
constructor arguments, plain Python values), so a checkpoint that stores them next to the
weights rebuilds the exact network::

    model = create_model(ckpt["model_name"], **ckpt["init_kwargs"])
    model.load_state_dict(ckpt["state_dict"])

Layout: ``layers`` holds the blocks every model shares (CBR, LayerNorm2d, padding and
input checks), ``base.SegmentationModel`` the common tail (pad, features, 1x1 heads, crop
back), ``unet`` and ``sa2net/`` the networks (``sa2net/`` keeps only SA2-specific parts),
``bundle`` the portable weights-plus-settings record.

Importing this package is cheap: it does not import torch. Built-in models are registered
as ``"module:attribute"`` strings and imported on first use.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

__all__ = ["create_model", "get_model_class", "list_models", "register_model"]

_Builder = TypeVar("_Builder", bound=Callable[..., Any])

# name -> model class / factory, or "module:attribute" to import lazily.
_REGISTRY: dict[str, Callable[..., Any] | str] = {
    "sa2net": "sa2_pipeline.models.sa2net.model:SA2Net",
    "unet": "sa2_pipeline.models.unet:UNet",
}


def _qualified_name(obj: Callable[..., Any]) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def register_model(name: str) -> Callable[[_Builder], _Builder]:
    """Class/function decorator that registers a model builder under ``name``.

    The builder is called with the keyword arguments given to :func:`create_model` and
    must return a ``torch.nn.Module``. Registering a second, different builder under a
    taken name raises ``ValueError`` (re-registering the same one is a no-op).

    Args:
        name: Registry name (what configs and checkpoints refer to).

    Returns:
        The decorator; it returns the builder unchanged apart from setting
        ``builder.model_name = name`` on classes.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def decorator(builder: _Builder) -> _Builder:
        existing = _REGISTRY.get(name)
        same = existing is None or existing is builder or existing == _qualified_name(builder)
        if not same:
            shown = existing if isinstance(existing, str) else _qualified_name(existing)
            raise ValueError(
                f"model name {name!r} is already registered to {shown}; "
                f"cannot register {_qualified_name(builder)}"
            )
        _REGISTRY[name] = builder
        if isinstance(builder, type):
            builder.model_name = name
        return builder

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def get_model_class(name: str) -> Callable[..., Any]:
    """Return the builder (usually the ``nn.Module`` class) registered as ``name``.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    try:
        entry = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())}"
        ) from None
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        # Importing the module runs its @register_model, which swaps in the real class.
        entry = getattr(importlib.import_module(module_name), attr)
        _REGISTRY[name] = entry
    return entry


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with constructor arguments ``kwargs``.

    Args:
        name: One of :func:`list_models`.
        **kwargs: Constructor arguments (e.g. ``in_channels``, ``num_classes``,
            ``base_channels``, ``deep_supervision``).

    Returns:
        The model, with ``model.model_name`` (= ``name``) and ``model.init_kwargs`` (the
        full constructor arguments, defaults included when the model records them).

    Raises:
        ValueError: Unknown name (the message lists the valid ones), or invalid arguments.
    """
    builder = get_model_class(name)
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as err:
        params = ", ".join(inspect.signature(builder).parameters)
        raise ValueError(
            f"invalid arguments for model {name!r}: {err}; accepted: {params}"
        ) from None
    model = builder(**kwargs)
    model.model_name = name
    if not isinstance(getattr(model, "init_kwargs", None), dict):
        model.init_kwargs = dict(kwargs)
    return model
