"""Workdirs written before the current layout (commit e83a4e5: model configs with `dtype`,
boolean `remat`, `label_smoothing` on the transformer's config) still load and resume.

tests/data/e83a4e5/ holds two such workdirs, trained 2 steps by that commit's code:
gpt_tiny (runlocal, emb_dim 32, 2 layers) and transformer_tiny (transformer_translate runlocal).
"""
import os
import shutil

import numpy as np

from experiments.configs import gpt_tiny
from zoo.train.loop import train_and_evaluate
from zoo.train.workdir import build_model, load_trained

OLD = os.path.join(os.path.dirname(__file__), "data", "e83a4e5")


def _copy(name, tmp_path):
    target = tmp_path / name
    shutil.copytree(os.path.join(OLD, name), target)
    return str(target)


def test_old_gpt_workdir_loads_and_resumes(tmp_path):
    workdir = _copy("gpt_tiny", tmp_path)
    spec, model, params, meta = load_trained(workdir)
    assert meta["step"] == 2 and "dtype" in meta["model_config"]  # written the old way
    assert model.config.compute_dtype == "float32" and model.config.remat == "none"
    config = gpt_tiny.get_config("runlocal")
    config.unlock()
    config.update(emb_dim=32, num_heads=2, num_layers=2, mlp_dim=64, max_len=32,
                  num_train_steps=4, num_samples=0, num_eval_batches=1,
                  checkpoint_every_steps=2, eval_every_steps=2)
    config.lock()
    summary = train_and_evaluate(config, workdir)  # refused if the model looked different
    assert summary["step"] == 4 and np.isfinite(summary["eval"]["loss"])


def test_old_transformer_workdir_keeps_its_label_smoothing(tmp_path):
    workdir = _copy("transformer_tiny", tmp_path)
    spec, model, params, meta = load_trained(workdir)
    assert "label_smoothing" in meta["model_config"]  # a model field then, a task setting now
    import ml_collections

    _, _, _, task = build_model(ml_collections.ConfigDict(meta["config"]))
    assert task.label_smoothing == 0.1

    from zoo.eval.translator import load_translator

    translator = load_translator(workdir)
    assert len(translator(["twelve"])) == 1
