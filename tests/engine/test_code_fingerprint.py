"""The training fingerprint covers the code that computes a result, and only that code."""

import shutil
from pathlib import Path

import sa2_pipeline
from sa2_pipeline.engine.fingerprint import code_fingerprint

PACKAGE = Path(sa2_pipeline.__file__).parent


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "sa2_pipeline"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_registry_and_tracking_edits_keep_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    assert before == code_fingerprint(PACKAGE)  # independent of where the package lives
    _edit(root / "tracking" / "registry.py", 'TAG_PREFIX = "sa2."', 'TAG_PREFIX = "sa3."')
    _edit(root / "tracking" / "registry.py", '"promotion_decision"', '"promotion_verdict"')
    _edit(root / "tracking" / "callbacks.py", '"sa2.resumed_from_epoch"', '"sa2.resumed_at"')
    assert code_fingerprint(root) == before
    # Whole-slide and folder inference serve models; they do not train them.
    validation_path = {"precision.py", "predict.py", "sliding_window.py"}
    serving = [f for f in (root / "inference").glob("*.py") if f.name not in validation_path]
    for file in serving:
        file.write_text(file.read_text() + "\n# edited\n")
    assert code_fingerprint(root) == before


def test_the_validation_prediction_path_is_in_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    _edit(root / "inference" / "sliding_window.py", "sigma_scale: float = 1.0 / 8.0",
          "sigma_scale: float = 1.0 / 4.0")
    assert code_fingerprint(root) != before


def test_engine_and_model_edits_change_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    _edit(root / "engine" / "trainer.py", "CHECKPOINT_FORMAT = 1", "CHECKPOINT_FORMAT = 2")
    after_engine = code_fingerprint(root)
    assert after_engine != before
    (root / "models" / "unet.py").write_text((root / "models" / "unet.py").read_text() + "\n#\n")
    assert code_fingerprint(root) != after_engine
