"""The irreducible-loss model of rho_loss: the holdout read from the stream head, training, saving and reuse.
No Ray (prepare_irreducible with remote=False)."""

import numpy as np
import torch

from ol_ray.config import SelectionConfig, load_config
from ol_ray.learner.irreducible import holdout_start, prepare_irreducible, read_holdout, train_irreducible
from ol_ray.models.loading import head_layer, load_model, load_numpy_state
from ol_ray.selection.config import uses_rho_loss
from ol_ray.tasks.classification import score_samples


def memory_config(tiny_model_dir, run_dir=""):
    return load_config(None, ["stream.source=memory", "stream.text_field=text", f"model.name_or_path={tiny_model_dir}",
                              "model.max_length=32", "selection.strategy=rho_loss", "selection.holdout_size=48",
                              "selection.irreducible_epochs=3", "batching.batch_size=16", "learner.lr=3e-3",
                              "learner.torch_threads=1", f"output.run_dir={run_dir}"])


def rows(sst2_rows, count):
    out = [{"text": text, "label": int(label)} for text, label in sst2_rows[:count]]
    out[5] = {"text": "", "label": 1}  # a bad row inside the holdout
    return out


def test_which_selections_need_the_model():
    assert uses_rho_loss(SelectionConfig(strategy="rho_loss"))
    assert uses_rho_loss(SelectionConfig(strategy="mix", mix={"rho_loss": 0.5, "random": 0.5}))
    assert not uses_rho_loss(SelectionConfig(strategy="loss"))


def test_holdout_is_the_stream_head_and_training_lowers_its_loss(tiny_model_dir, sst2_rows):
    cfg = memory_config(tiny_model_dir)
    holdout = read_holdout(cfg, rows(sst2_rows, 100))
    assert holdout.read == 48 and holdout.rejected == 1 and len(holdout.labels) == 47
    assert holdout.cursor["row"] == 48
    state = train_irreducible(cfg, holdout.input_ids, holdout.labels)
    trained, untrained = load_model(cfg.model, pretrained=False), load_model(cfg.model)
    load_numpy_state(trained, state)
    losses = [score_samples(m.eval(), head_layer(m, 2), holdout.input_ids, holdout.labels, 0,
                            torch.device("cpu"))["loss"].mean() for m in (trained, untrained)]
    assert losses[0] < losses[1]


def test_the_model_is_saved_once_and_reused(tiny_model_dir, sst2_rows, tmp_path):
    cfg = memory_config(tiny_model_dir, str(tmp_path))
    first = prepare_irreducible(cfg, str(tmp_path), rows(sst2_rows, 100), remote=False)
    assert holdout_start(str(tmp_path))["cursor"]["row"] == 48
    again = prepare_irreducible(cfg, str(tmp_path), rows=[], remote=False, resume=True)  # loaded, not retrained
    assert set(first) == set(again) and all(np.allclose(first[k], again[k]) for k in first)
    fresh = prepare_irreducible(memory_config(tiny_model_dir, str(tmp_path)), str(tmp_path),
                                rows(sst2_rows, 100)[20:], remote=False)  # a new run never reuses what it finds
    assert not all(np.allclose(first[k], fresh[k]) for k in first)
    assert prepare_irreducible(load_config(None, ["stream.path=x.tsv"]), str(tmp_path)) is None
