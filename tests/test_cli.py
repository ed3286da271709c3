"""The command line: release-checkpoint import into the registry, segmenting files."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
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


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(path: Path) -> bytes:
    return tifffile.imread(path).tobytes()


def test_make_synthetic_data_adds_new_slides_next_to_the_existing_ones(tmp_path, capsys):
    out = tmp_path / "raw"
    base = ["make-synthetic-data", str(out), "--n-train", "3", "--n-test", "1",
            "--image-size", "32"]
    assert main(base) == 0
    before = _files(out)

    assert main([*base[:2], "--add", "--prefix", "NEW", "--n-train", "2", "--n-test", "0",
                 "--image-size", "32"]) == 0
    assert "NEW-TRAIN-000, NEW-TRAIN-001" in capsys.readouterr().out
    after = _files(out)
    assert {name: after[name] for name in before} == before  # byte-identical
    added = sorted(after.keys() - before.keys())
    assert added == ["MoNuSeg 2018 Training Data/Annotations/NEW-TRAIN-000.xml",
                     "MoNuSeg 2018 Training Data/Annotations/NEW-TRAIN-001.xml",
                     "MoNuSeg 2018 Training Data/Tissue Images/NEW-TRAIN-000.tif",
                     "MoNuSeg 2018 Training Data/Tissue Images/NEW-TRAIN-001.tif"]
    # New content (what retraining detection hashes): no pixels, no annotation repeated.
    old_pixels = {_pixels(out / name) for name in before if name.endswith(".tif")}
    old_xml = {data for name, data in before.items() if name.endswith(".xml")}
    for name in added:
        if name.endswith(".tif"):
            assert _pixels(out / name) not in old_pixels, name
        else:
            assert after[name] not in old_xml, name
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary folder left


def test_make_synthetic_data_add_refuses_an_existing_name_and_writes_nothing(tmp_path,
                                                                          capsys):
    out = tmp_path / "raw"
    assert main(["make-synthetic-data", str(out), "--n-train", "2", "--n-test", "1",
                 "--image-size", "32"]) == 0
    before = _files(out)
    capsys.readouterr()

    # SYN-TRAIN-002 would be new, SYN-TRAIN-001 exists: nothing at all is written.
    assert main(["make-synthetic-data", str(out), "--add", "--start", "1", "--n-train", "2",
                 "--n-test", "0", "--image-size", "32"]) == 1
    err = capsys.readouterr().err
    assert "Tissue Images/SYN-TRAIN-001.tif" in err and "nothing written" in err
    assert "SYN-TRAIN-002" not in err
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]

    # A new name without --add is not silently "kept": the error says what to do.
    assert main(["make-synthetic-data", str(out), "--prefix", "NEW", "--image-size", "32"]) == 1
    assert "--add" in capsys.readouterr().err
    assert _files(out) == before


def test_the_documented_walk_through_adds_what_docs_retraining_says(tmp_path, capsys):
    """docs/retraining.md "Try it on the embedded data": its command and what it prints."""
    doc = (Path(__file__).parents[1] / "docs" / "retraining.md").read_text()
    section = doc.split("## Try it on the embedded data", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(block) == 5
    command = next(line for line in block if "make-synthetic-data" in line).split()
    assert command[:3] == ["sa2-pipeline", "make-synthetic-data", "data/01_raw/synthetic"]
    out = tmp_path / "data" / "01_raw" / "synthetic"
    assert main(["make-synthetic-data", str(out), "--n-train", "1", "--n-test", "1"]) == 0
    capsys.readouterr()

    assert main(["make-synthetic-data", str(out), *command[3:]]) == 0
    printed = capsys.readouterr().out.strip().replace(str(out), "data/01_raw/synthetic")
    assert printed in " ".join(section.split())
    assert printed.endswith("NEW-TRAIN-000, NEW-TRAIN-001, NEW-TRAIN-002, NEW-TRAIN-003")
