"""An update's weights: selection weights times the rows' ratings, so that causal-LM feedback rated 0 trains nothing
on its row and a full rating trains it as any other."""

import numpy as np
import pytest

from ol_ray.config import load_config
from ol_ray.learner.core import OnlineLearner
from ol_ray.learner.updating import rated

from data_files import lm_candidates
from tiny_model import LM_SENTENCES


def test_ratings_scale_the_selection_weights_where_rows_have_them():
    weights = np.array([2.0, 1.0, 0.5], dtype=np.float32)
    assert rated(weights, {"rating": np.array([1.0, 0.0, 0.5], dtype=np.float32)}).tolist() == [2.0, 0.0, 0.25]
    assert rated(weights, {"label": np.zeros(3)}) is weights  # a classifier's rows have no rating
    assert rated(np.zeros(0, np.float32), {"rating": np.ones(0)}).shape == (0,)


def test_candidates_restored_without_a_rating_join_new_ones_as_rated_one():
    from ol_ray.learner.candidates import concat_columns

    old = {"sample_id": np.array(["a", "b"], dtype=object), "label": np.zeros(2, dtype=np.int64)}
    new = {**{key: value.copy() for key, value in old.items()}, "rating": np.array([0.0], dtype=np.float32)}
    new["sample_id"], new["label"] = np.array(["c"], dtype=object), np.zeros(1, dtype=np.int64)
    assert concat_columns([new, old])["rating"].tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("rating", [0.0, 1.0])
def test_a_row_rated_zero_moves_no_weight_and_one_rated_fully_does(rating, tiny_gpt2_dir, tmp_path):
    cfg = load_config(None, [
        "stream.path=unused", f"model.name_or_path={tiny_gpt2_dir}", "model.kind=causal_lm",
        "selection.strategy=random", "selection.pool_size=8", "batching.batch_size=8", "learner.lr=1e-2",
        "learner.weight_decay=0", "learner.warmup_updates=0", "learner.torch_threads=1"])
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    before = {key: value.detach().clone() for key, value in learner.model.state_dict().items()}
    columns = lm_candidates(tiny_gpt2_dir, (LM_SENTENCES * 2)[:8])
    columns["rating"] = np.full(8, rating, dtype=np.float32)
    records = learner.add_candidates(columns)
    assert [r["kind"] for r in records].count("update") == 1
    moved = max(float((learner.model.state_dict()[key] - before[key]).abs().max()) for key in before)
    assert (moved == 0.0) if rating == 0.0 else (moved > 1e-4)
