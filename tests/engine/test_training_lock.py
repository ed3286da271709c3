"""Two trainings of the same run started together: one trains, the other waits for it and
then resumes its finished checkpoint (never both writing the same last.pt)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

_TESTS_DIR = Path(__file__).resolve().parent

_SCRIPT = textwrap.dedent(f"""
    import sys, torch
    sys.path.insert(0, {str(_TESTS_DIR)!r})
    from test_trainer import MODEL, _toy_data
    from sa2_pipeline.config import TrainingConfig, parse
    from sa2_pipeline.engine.fit import fit_segmentation_model
    cfg = parse(TrainingConfig, {{"epochs": 3, "batch_size": 2, "patch_size": 32,
        "samples_per_epoch": 4, "num_threads": 1, "checkpoint_dir": sys.argv[1],
        "seed": 3, "device": "cpu"}}, "training")
    train_images, train_masks = _toy_data(4, seed=1)
    val_images, val_masks = _toy_data(2, seed=2)
    bundle, history = fit_segmentation_model(train_images, train_masks, val_images,
                                             val_masks, MODEL, cfg, eval_patch_size=64)
    torch.save({{"state_dict": bundle["state_dict"], "metadata": bundle["metadata"]}},
               sys.argv[2])
""")


def test_simultaneous_trainings_of_one_run_do_not_both_train(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT, str(tmp_path / "ckpt"), str(o)],
                              env=env, stderr=subprocess.PIPE, text=True) for o in outs]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    results = [torch.load(o, weights_only=False) for o in outs]
    resumed = sorted(r["metadata"]["resumed_from_epoch"] for r in results)
    assert resumed == [0, 3]  # one trained all 3 epochs; the other found them done
    for key, value in results[0]["state_dict"].items():
        assert torch.equal(value, results[1]["state_dict"][key])
    assert len(list((tmp_path / "ckpt").glob("*/last.pt"))) == 1
