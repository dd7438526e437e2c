import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ol_ray.config import ModelConfig, load_config
from ol_ray.data.source import SourceError
from ol_ray.models.loading import load_model
from ol_ray.observe.evaluation import evaluate, load_eval_set
from ol_ray.tasks.classification import macro_f1

from data_files import write_sst2_tsv


def test_macro_f1():
    labels = np.array([0, 0, 1, 1])
    assert macro_f1(labels, labels) == 1.0
    assert macro_f1(labels, np.array([0, 0, 0, 0])) == pytest.approx((2 / 3 + 0) / 2)
    assert macro_f1(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) < 0.5  # accuracy 0.75 hides a lost class


def test_eval_set_is_validated_tokenized_and_sorted(tiny_model_dir, sst2_rows, tmp_path):
    dev = tmp_path / "dev.tsv"
    write_sst2_tsv(dev, sst2_rows[:30], "bad\t9\n")
    cfg = load_config(None, ["stream.path=x", "stream.text_field=sentence", f"model.name_or_path={tiny_model_dir}",
                             f"eval.path={dev}"])
    eval_set = load_eval_set(cfg)
    assert len(eval_set.labels) == 30 and eval_set.rows_rejected == 1
    lengths = [len(ids) for ids in eval_set.input_ids]
    assert lengths == sorted(lengths)
    model = load_model(ModelConfig(name_or_path=tiny_model_dir))
    result = evaluate(model, eval_set, 0, torch.device("cpu"), batch_size=8)
    predicted_all = evaluate(model, eval_set, 0, torch.device("cpu"), batch_size=30)
    assert 0 <= result["accuracy"] <= 1 and result == pytest.approx(predicted_all)  # batching does not matter
    assert load_eval_set(load_config(None, ["stream.path=x"])) is None  # no dev set configured


def test_eval_set_falls_back_to_the_hub_split(tiny_model_dir, tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"sentence": ["good", "bad"], "label": [1, 0]}),
                   folder / "data" / "validation-00000-of-00001.parquet")
    cfg = load_config(None, ["stream.path=x", "stream.text_field=sentence", f"model.name_or_path={tiny_model_dir}",
                             f"eval.path={tmp_path / 'absent.tsv'}", f"stream.hub_dataset={folder}",
                             "stream.hub_fallback=true"])
    assert list(load_eval_set(cfg).labels) in ([0, 1], [1, 0])
    cfg = load_config(None, ["stream.path=x", f"eval.path={tmp_path / 'absent.tsv'}"])
    with pytest.raises(SourceError, match="eval.path"):
        load_eval_set(cfg)
