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


def test_engine_and_model_edits_change_the_fingerprint(tmp_path):
    root = _copy(tmp_path)
    before = code_fingerprint(root)
    _edit(root / "engine" / "trainer.py", "CHECKPOINT_FORMAT = 1", "CHECKPOINT_FORMAT = 2")
    after_engine = code_fingerprint(root)
    assert after_engine != before
    (root / "models" / "unet.py").write_text((root / "models" / "unet.py").read_text() + "\n#\n")
    assert code_fingerprint(root) != after_engine
