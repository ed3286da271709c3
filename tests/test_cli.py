"""The command line: release-checkpoint import into the registry, segmenting files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sa2_pipeline.cli import main

TSV = Path(__file__).parent / "data" / "sa2net_official_state_dict.tsv"


def fake_release_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A file written the way the release writes one, with its key names and shapes."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for line in TSV.read_text().splitlines()[1:]:
        key, shape, _used = line.split("\t")
        dims = [] if shape == "scalar" else [int(d) for d in shape.split("x")]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(dims, generator=generator) + 0.5
        else:
            state[key] = torch.randn(dims, generator=generator) * 0.02
    torch.save({"epoch": 12, "best_model": 0.81, "model": "SA2Net", "state_dict": state,
                "val_loss": 0.3, "optimizer": {"state": {}, "param_groups": []}}, path)
    return state


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def test_import_release_registers_a_usable_bgr_model(tmp_path, tracking, capsys):
    import cv2
    import mlflow
    from mlflow import MlflowClient

    from sa2_pipeline.models import create_model
    from sa2_pipeline.models.sa2net import convert_official_state_dict

    ckpt = tmp_path / "best_model.pth"
    release_state = fake_release_checkpoint(ckpt)
    assert main(["import-release", str(ckpt), "--dataset", "glas"]) == 0
    assert "registered sa2net-glas version 1" in capsys.readouterr().out

    version = MlflowClient().get_model_version_by_alias("sa2net-glas", "release")
    assert version.tags["sa2.source"] == "release"
    assert "'channel_order': 'bgr'" in version.tags["sa2.input_convention"]

    # The registered pyfunc equals our network fed as the release was: BGR in [0, 1]
    # at 224, probabilities resized back to the image.
    image = np.random.default_rng(0).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    mask = mlflow.pyfunc.load_model("models:/sa2net-glas@release").predict(
        image, params={"threshold": 0.5})
    net = create_model("sa2net", in_channels=3, num_classes=1, base_channels=64)
    net.load_state_dict(convert_official_state_dict({"state_dict": release_state}))
    net.eval()
    bgr = cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR)[..., ::-1] / 255.0
    with torch.no_grad():
        logits = net(torch.from_numpy(bgr.copy()).permute(2, 0, 1)[None].float())
    probs = torch.sigmoid(logits)[0, 0].numpy()
    expected = cv2.resize(probs, (50, 60), interpolation=cv2.INTER_LINEAR) > 0.5
    assert mask.shape == (60, 50)
    assert (mask == expected).mean() > 0.999


def test_import_release_refuses_a_missing_file(tmp_path):
    with pytest.raises(SystemExit, match="no such checkpoint file"):
        main(["import-release", str(tmp_path / "nope.pth"), "--dataset", "glas"])


def test_make_synthetic_data_never_overwrites(tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["make-synthetic-data", str(out), "--n-train", "2", "--n-test", "1",
                 "--image-size", "32"]) == 0
    first = sorted(p.name for p in out.rglob("*.tif"))
    assert len(first) == 3
    assert main(["make-synthetic-data", str(out), "--seed", "5"]) == 0
    assert "kept existing data" in capsys.readouterr().out
    assert sorted(p.name for p in out.rglob("*.tif")) == first
