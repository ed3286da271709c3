"""Property-based tests of the parameter schemas and the pyfunc's input conversion.

- any dict given to a group's schema parses to a frozen config, or fails with a
  ConfigError that names one of the keys given (never a TypeError or AttributeError);
- any parameter tree passes :func:`validate_parameters` or fails naming a key;
- any array given to the registered model's input conversion becomes one uint8 RGB image
  of at least MIN_SIDE px a side, or is refused (MlflowException, HTTP 400) saying why.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sa2_pipeline.config import PARAMETER_GROUPS, ConfigError, parse, validate_parameters

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=2),
    max_leaves=4,
)
_SCHEMAS = {name: cls for name, cls in PARAMETER_GROUPS.items() if name != "baselines"}


@st.composite
def _group(draw):
    name = draw(st.sampled_from(sorted(_SCHEMAS)))
    fields = [f.name for f in dataclasses.fields(_SCHEMAS[name])]
    keys = st.sampled_from(fields) | st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
    return name, draw(st.dictionaries(keys, _VALUES, max_size=4))


def _names_a_key(message: str, group: str, data: dict) -> bool:
    return any(f"{group}.{key}" in message or repr(key) in message or
               re.search(rf"\b{re.escape(str(key))}\b", message) for key in data)


@given(_group())
def test_a_schema_parses_or_names_the_key(group_and_data):
    group, data = group_and_data
    try:
        config = parse(_SCHEMAS[group], data, group)
    except ConfigError as err:
        assert data, "the defaults must parse"
        assert _names_a_key(str(err), group, data), str(err)
    else:
        assert isinstance(config, _SCHEMAS[group])
        assert dataclasses.is_dataclass(config)


@given(st.dictionaries(st.sampled_from(sorted(PARAMETER_GROUPS)) | st.text(min_size=1,
                                                                             max_size=8),
                       st.dictionaries(st.text(max_size=6), _VALUES, max_size=2) | _VALUES,
                       max_size=3))
def test_any_parameter_tree_is_validated_with_the_key_named(params):
    try:
        validate_parameters(params)
    except ConfigError as err:
        assert any(str(key) in str(err) or repr(key) in str(err) for key in params), str(err)


_ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int64, np.int16, np.float32, np.bool_, np.uint16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5),
)


@given(_ARRAYS)
def test_pyfunc_input_becomes_images_or_is_refused(array):
    from mlflow.exceptions import MlflowException

    from sa2_pipeline.tracking.pyfunc import MIN_SIDE, _as_image

    try:
        image = _as_image(array)
    except MlflowException as err:
        assert "expected" in err.message or "at least" in err.message, err.message
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= MIN_SIDE, f"small image {image.shape}"


_IMAGE_SIZED = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int64, np.int16, np.float32, np.float64, np.bool_,
                           np.uint16]),
    shape=st.tuples(st.integers(31, 34), st.integers(31, 34), st.sampled_from([1, 3, 4])),
)


@given(_IMAGE_SIZED)
def test_pyfunc_keeps_pixel_values_exactly_or_refuses(array):
    # Images of a size the model takes: the values reach the model unchanged (uint8) or
    # the call is refused: never rounded (floats) nor wrapped (integers outside 0-255).
    from mlflow.exceptions import MlflowException

    from sa2_pipeline.tracking.pyfunc import _as_image

    try:
        image = _as_image(array)
    except MlflowException as err:
        assert "expected" in err.message or "at least" in err.message, err.message
        acceptable = (array.dtype.kind in "ui" and array.shape[2] == 3
                      and min(array.shape[:2]) >= 32 and array.min() >= 0
                      and array.max() <= 255)
        assert not acceptable, err.message
    else:
        assert array.dtype.kind in "ui", array.dtype
        assert image.dtype == np.uint8 and image.shape == array.shape
        np.testing.assert_array_equal(image.astype(np.int64), array.astype(np.int64))
