"""Import of the authors' release checkpoints, from a fake release built from its key list.

``sa2net_official_state_dict.tsv`` lists every key of the release ``state_dict`` (in=3,
n=1, C=64) with its shape and whether the forward pass uses it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from sa2_pipeline.models import create_model
from sa2_pipeline.models.sa2net import (
    OFFICIAL_INPUT_CONVENTION,
    OfficialCheckpointError,
    convert_official_state_dict,
    load_official_checkpoint,
    official_model_kwargs,
)

_TSV_NAME = "sa2net_official_state_dict.tsv"
_TSV_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "docs" / _TSV_NAME,
    Path("/work/shared") / _TSV_NAME,
]


@pytest.fixture(scope="module")
def release_keys() -> list[tuple[str, tuple[int, ...], bool]]:
    """(key, shape, used_in_forward) for every release key."""
    path = next((p for p in _TSV_CANDIDATES if p.is_file()), None)
    if path is None:
        pytest.skip(f"{_TSV_NAME} not found (looked in {', '.join(map(str, _TSV_CANDIDATES))})")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        (
            row["key"],
            () if row["shape"] == "scalar" else tuple(int(n) for n in row["shape"].split("x")),
            row["used_in_forward"] == "yes",
        )
        for row in rows
    ]


def _fake_release_state_dict(release_keys, in_channels=3, num_classes=1, seed=0):
    """Random tensors with the release's keys and shapes (resized for in/n if asked)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, release_shape, _ in release_keys:
        shape = release_shape
        if key == "inc.conv.weight":
            shape = (shape[0], in_channels, *shape[2:])
        elif key.startswith("outc"):
            shape = (num_classes, *shape[1:])
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


def _release_checkpoint(state_dict):
    """Wrap a state dict the way the release's training script saves it."""
    return {
        "epoch": 87,
        "best_model": True,
        "model": "SA2Net",
        "state_dict": state_dict,
        "val_loss": np.float64(0.1875),  # numpy scalars must not force weights_only=False
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1, 2]}]},
    }


def test_tsv_describes_the_release(release_keys):
    assert len(release_keys) == 346
    assert sum(used for *_, used in release_keys) == 284


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "dataparallel"])
def test_release_checkpoint_file_loads_strictly_with_every_used_tensor_in_place(
    release_keys, prefix, tmp_path
):
    release = _fake_release_state_dict(release_keys)
    path = tmp_path / "best_model.pth"
    torch.save(_release_checkpoint({prefix + k: v for k, v in release.items()}), path)

    numpy_scalar = [np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType]
    with torch.serialization.safe_globals(numpy_scalar):
        checkpoint = torch.load(path, weights_only=True)
    converted = convert_official_state_dict(checkpoint)
    model = create_model("sa2net", in_channels=3, num_classes=1, base_channels=64)
    model.load_state_dict(converted, strict=True)

    ours = model.state_dict()
    used = {k: release[k] for k, _, is_used in release_keys if is_used}
    assert len(ours) == len(used) == len(converted)
    # Every used tensor landed exactly once (random tensors are unique: compare contents).
    fingerprint = lambda t: (tuple(t.shape), round(t.double().abs().sum().item(), 6))  # noqa: E731
    assert sorted(map(fingerprint, used.values())) == sorted(map(fingerprint, ours.values()))
    # ... and in the right place.
    spot_checks = {
        "inc.conv.weight": "encoder.stages.0.convs.0.conv.weight",
        "inc.norm.running_var": "encoder.stages.0.convs.0.norm.running_var",
        "down4.nConvs.1.norm.bias": "encoder.stages.4.convs.1.norm.bias",
        "side_conv2.weight": "sa2.side_convs.1.weight",
        "side_conv5.weight": "decoder.input_conv.weight",
        "bottleneck.gcn1.project_in.weight": "sa2.msfns.0.project_in.weight",
        "bottleneck.gcn3.dwconv5x5.bias": "sa2.msfns.2.dwconv5.bias",
        "bottleneck.mlp2.pos.weight": "sa2.mlps.1.dwconv.weight",
        "bottleneck.mlp4.norm.weight": "sa2.mlps.3.norm.weight",
        "bottleneck.conv.weight": "sa2.fuse_conv.weight",
        "bottleneck.bn.running_mean": "sa2.fuse_norm.running_mean",
        "bottleneck.qconv.weight": "sa2.query_conv.weight",
        "bottleneck.conv4.weight": "sa2.out_convs.3.weight",
        "up4.AG.dwconv.0.weight": "decoder.blocks.3.up_norm.weight",
        "up4.AG.dwconv.3.weight": "decoder.blocks.3.up_dw.weight",
        "up1.AG.dwconv.1.bias": "decoder.blocks.0.up_pw.bias",
        "up2.AG.conv.0.weight": "decoder.blocks.1.skip_dw.weight",
        "up3.AG.psi.0.weight": "decoder.blocks.2.psi_conv.weight",
        "up3.AG.psi.1.running_var": "decoder.blocks.2.psi_norm.running_var",
        "up1.AG.proj.weight": "decoder.blocks.0.skip_proj.weight",
        "up2.nConvs.1.conv.weight": "decoder.blocks.1.convs.1.conv.weight",
        "outc4.weight": "head.weight",
        "outc3.weight": "aux_heads.0.weight",
        "outc2.bias": "aux_heads.1.bias",
        "outc1.weight": "aux_heads.2.weight",
    }
    for release_key, our_key in spot_checks.items():
        assert torch.equal(ours[our_key], release[release_key]), release_key
    assert ours["encoder.stages.0.convs.0.norm.num_batches_tracked"].item() == 1234


def test_bare_state_dict_with_other_channel_counts(release_keys):
    release = _fake_release_state_dict(release_keys, in_channels=1, num_classes=3)
    converted = convert_official_state_dict(release)
    kwargs = official_model_kwargs(converted)
    assert kwargs == {"in_channels": 1, "num_classes": 3, "base_channels": 64}
    create_model("sa2net", **kwargs).load_state_dict(converted, strict=True)


def test_missing_key_is_named(release_keys):
    release = _fake_release_state_dict(release_keys)
    del release["up2.AG.psi.1.running_var"]
    del release["bottleneck.gcn4.project_out.bias"]
    with pytest.raises(ValueError, match="missing keys") as err:
        convert_official_state_dict(release)
    assert "up2.AG.psi.1.running_var" in str(err.value)
    assert "bottleneck.gcn4.project_out.bias" in str(err.value)


def test_wrong_shape_is_named_with_expected_and_actual(release_keys):
    release = _fake_release_state_dict(release_keys)
    release["bottleneck.qconv.weight"] = torch.randn(64, 1, 3, 3)
    with pytest.raises(OfficialCheckpointError) as err:
        convert_official_state_dict(release)
    message = str(err.value)
    assert "bottleneck.qconv.weight" in message
    assert "expected (64, 1, 5, 5), got (64, 1, 3, 3)" in message


def test_unknown_key_is_named_and_unused_keys_are_dropped(release_keys):
    release = _fake_release_state_dict(release_keys)
    release["bottleneck.extra.weight"] = torch.zeros(3)
    with pytest.raises(OfficialCheckpointError, match=r"unexpected keys \(1\): bottleneck.extra"):
        convert_official_state_dict(release)
    del release["bottleneck.extra.weight"]
    converted = convert_official_state_dict(release)
    assert not any("Multi_scale_Fuse" in k or "_1." in k for k in converted)


def test_non_state_dict_input_is_refused():
    with pytest.raises(OfficialCheckpointError, match="not tensors"):
        convert_official_state_dict({"epoch": 3, "model": "SA2Net"})
    with pytest.raises(OfficialCheckpointError, match="got list"):
        convert_official_state_dict([1, 2])


def test_load_official_checkpoint_builds_an_eval_model_with_the_bgr_convention(
    release_keys, tmp_path
):
    release = _fake_release_state_dict(release_keys)
    path = tmp_path / "release.pth"
    torch.save(_release_checkpoint(release), path)
    model = load_official_checkpoint(path)
    assert not model.training
    assert model.model_name == "sa2net"
    assert model.init_kwargs["base_channels"] == 64
    assert model.input_convention == OFFICIAL_INPUT_CONVENTION
    assert model.input_convention["channel_order"] == "BGR"
    assert torch.equal(model.head.weight, release["outc4.weight"])


def test_unsafe_pickle_is_refused_unless_trusted(release_keys, tmp_path):
    path = tmp_path / "release.pth"
    torch.save({**_release_checkpoint(_fake_release_state_dict(release_keys)), "x": Path}, path)
    with pytest.raises(OfficialCheckpointError, match="--trust"):
        load_official_checkpoint(path)
    assert load_official_checkpoint(path, weights_only=False).init_kwargs["base_channels"] == 64
