"""Slides a user segments never become training data (docs/inference.md, "Why
data/09_inference/"): in every environment the inference pipeline's default input and
output folders lie outside the raw dataset folder, outside every output DVC tracks, and
under a path .dvcignore excludes."""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = sorted(p.name for p in (ROOT / "conf").iterdir()
                      if p.is_dir() and p.name not in ("local",))


def _params(env: str) -> dict:
    from kedro.config import OmegaConfigLoader

    from sa2_pipeline.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


def _tracked_outs(dataset: str) -> list[PurePosixPath]:
    """Every ``outs`` path of dvc.yaml's stages, for ``dataset``."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for out in body.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            outs.append(PurePosixPath(str(path).replace("${item}", dataset)))
    return outs


def _inside(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return path == folder or folder in path.parents


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_default_inference_folders_are_outside_every_versioned_path(env):
    params = _params(env)
    dataset = params["data_ingestion"]["dataset"]
    raw = PurePosixPath(params["data_ingestion"]["raw_dir"])
    outs = _tracked_outs(dataset)
    assert outs, "dvc.yaml lists no outs: nothing was checked"
    for key in ("input_dir", "output_dir"):
        folder = PurePosixPath(params["inference"][key])
        assert not _inside(folder, raw) and not _inside(raw, folder), (env, key, folder)
        for out in outs:
            assert not _inside(folder, out) and not _inside(out, folder), (env, key, out)


def test_the_inference_layer_is_dvc_ignored_and_git_ignored():
    ignored = [line.strip() for line in (ROOT / ".dvcignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert any(fnmatch.fnmatch("data/09_inference/", pattern) for pattern in ignored)
    gitignore = (ROOT / ".gitignore").read_text()
    assert "data/**" in gitignore
