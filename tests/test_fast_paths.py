"""Fast paths the benchmark suite measures (benchmarks/bench.py): dataloader workers sized to the
machine, preprocessing reused from the datasets cache (stable fingerprints), per-worker augmentation
streams for speech."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import pytest
from transformers import TrainerCallback

from hf_transfer import memory, train, trainer
from hf_transfer.tasks import resolve
from hf_transfer.tasks import audio as speech
from hf_transfer.tasks import data
from hf_transfer.tasks import image_classification as vision
from hf_transfer.validate import load_recipe
from tests.test_speech import audio_files, tiny_audio  # noqa: F401 - session fixtures
from tests.tiny import speech_recipe, text_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cores, processes, expected", [
    (1, None, 0), (2, None, 1), (3, None, 2), (8, None, 4), (64, None, 4), (8, "2", 3), (8, "8", 0),
])
def test_default_workers_leave_a_core_and_share_among_local_processes(monkeypatch, cores, processes, expected):
    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if processes is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    assert data.default_num_workers() == expected


@pytest.mark.parametrize("modality", [vision, speech])
def test_media_modalities_default_to_machine_sized_workers_and_a_recipe_value_wins(modality, tmp_path):
    assert modality.training_defaults()["dataloader_num_workers"] == data.default_num_workers()
    name = "vision" if modality is vision else "speech"
    raw = {"model": {"name_or_path": "x", "modality": name}, "data": {"path": "csv"},
           "training": {"output_dir": str(tmp_path)}}
    args = trainer.training_arguments(load_recipe(raw), tmp_path)
    assert args.dataloader_num_workers == data.default_num_workers()
    raw["training"]["dataloader_num_workers"] = 3
    assert trainer.training_arguments(load_recipe(raw), tmp_path).dataloader_num_workers == 3


def test_text_keeps_loading_in_the_training_process(tmp_path):
    raw = {"model": {"name_or_path": "x"}, "data": {"path": "csv"}, "training": {"output_dir": str(tmp_path)}}
    assert trainer.training_arguments(load_recipe(raw), tmp_path).dataloader_num_workers == 0


def _preprocessed(recipe):
    task, spec = resolve(recipe)
    loaded = data.load_data(recipe.data, task.input_columns(spec), 0, task.labeler(spec))
    return task.preprocess(loaded.splits, task.load_processor(spec), spec)


def _assert_second_run_reuses_the_cache(recipe, caplog):
    first = _preprocessed(recipe)
    second = _preprocessed(recipe)
    for role in first:
        assert first[role]._fingerprint == second[role]._fingerprint, role
        files = [f["filename"] for f in second[role].cache_files]
        assert files and files == [f["filename"] for f in first[role].cache_files]
        assert any("/cache-" in f for f in files), files  # the preprocessed table, not only the raw one
    assert "couldn't be hashed" not in caplog.text


def test_text_tokenization_is_cached_by_a_stable_fingerprint(tiny_bert, sentiment_files, tmp_path, caplog):
    _assert_second_run_reuses_the_cache(load_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path)), caplog)


def test_speech_decoding_is_cached_by_a_stable_fingerprint(tiny_audio, audio_files, tmp_path, caplog):  # noqa: F811
    recipe = load_recipe(speech_recipe(tiny_audio["whisper"], audio_files["csv"], tmp_path))
    _assert_second_run_reuses_the_cache(recipe, caplog)


def test_speech_augmentation_draws_from_one_stream_per_dataloader_worker(monkeypatch):
    rng, per_worker = np.random.default_rng(0), {}
    monkeypatch.setattr("torch.utils.data.get_worker_info", lambda: None)
    assert speech._worker_rng(rng, per_worker) is rng  # the training process: the split's own generator
    assert speech._worker_rng(None, per_worker) is None  # evaluation: no augmentation
    worker = SimpleNamespace(seed=11)
    monkeypatch.setattr("torch.utils.data.get_worker_info", lambda: worker)
    first = speech._worker_rng(rng, per_worker)
    assert first is not rng and speech._worker_rng(rng, per_worker) is first
    assert first.random() != np.random.default_rng(0).random()
    worker.seed = 12  # another worker (or the next epoch's): another stream
    assert speech._worker_rng(rng, per_worker) not in (first, rng)


def _trained_adapter(recipe_dict, out):
    recipe = load_recipe(recipe_dict)
    trainer, _ = train.build_trainer(recipe, out)
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    end = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    return start, end, trainer


def test_lora_with_gradient_checkpointing_trains_the_same_adapter(tiny_bert, sentiment_files, tmp_path):
    """training.activation_checkpointing (Trainer's switch, the benchmark's LoRA memory case) recomputes
    activations in the backward pass: every LoRA weight still learns, and exactly as without it."""
    runs = {}
    for checkpointing in (False, True):
        raw = text_recipe(tiny_bert, sentiment_files, tmp_path / str(checkpointing), strategy="lora")
        raw["training"] |= {"activation_checkpointing": checkpointing, "eval_strategy": "no", "save_strategy": "no"}
        raw["model"]["fast_dropout"] = False  # a checkpointed run draws torch's dropout masks (dropout.py)
        runs[checkpointing] = _trained_adapter(raw, tmp_path / str(checkpointing))
    start, plain, _ = runs[False]
    _, checkpointed, trainer = runs[True]
    assert trainer.model.base_model.model.is_activation_checkpointing
    assert start and all(not torch.equal(start[n], plain[n]) for n in start if "lora_B" in n)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_lora_with_gradient_checkpointing_trains_the_same_speech_adapter(tiny_audio, audio_files,  # noqa: F811
                                                                         tmp_path, family):
    """The same on speech encoders (plain PeftModel, no input embeddings to mark: non-reentrant
    checkpointing needs none): every LoRA weight that learns without it learns the same with it."""
    runs = {}
    for checkpointing in (False, True):
        raw = speech_recipe(tiny_audio[family], audio_files["csv"], tmp_path / str(checkpointing), strategy="lora")
        raw["training"] |= {"activation_checkpointing": checkpointing, "eval_strategy": "no", "save_strategy": "no"}
        raw["model"]["fast_dropout"] = False  # a checkpointed run draws torch's dropout masks (dropout.py)
        runs[checkpointing] = _trained_adapter(raw, tmp_path / str(checkpointing))
    start, plain, _ = runs[False]
    _, checkpointed, trainer = runs[True]
    assert trainer.model.get_base_model().is_activation_checkpointing
    assert any(not torch.equal(start[n], plain[n]) for n in start if "lora_B" in n)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


class _Glibc:
    def __init__(self, glibc: bool = True):
        self.calls = []
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.36"

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


@pytest.mark.parametrize("env, device, glibc, expected", [
    ({}, "cpu", True, True),
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "cpu", True, False),  # the user's threshold wins
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}, "cpu", True, False),
    ({}, "cuda", True, False),  # activations live on the GPU
    ({}, "cpu", False, False),  # not glibc (musl)
])
def test_cpu_training_returns_freed_blocks_unless_a_threshold_is_set(monkeypatch, env, device, glibc, expected):
    import ctypes
    import sys

    libc = _Glibc(glibc)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(sys, "platform", "linux")
    for key in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert memory.return_freed_memory(SimpleNamespace(device=torch.device(device))) is expected
    assert libc.calls == ([(memory.M_MMAP_THRESHOLD, 1 << 20)] if expected else [])


@pytest.mark.parametrize("strategy, expected", [("lora", True), ("ia3", True), ("full", False)])
def test_peft_runs_return_freed_memory_when_training_begins_and_full_runs_do_not(tiny_bert, sentiment_files,
                                                                                  tmp_path, strategy, expected):
    """The default lives in the strategy record (`return_freed_memory`): PEFT strategies on, full off."""
    from hf_transfer.strategies import STRATEGIES

    assert STRATEGIES[strategy].return_freed_memory is expected
    raw = text_recipe(tiny_bert, sentiment_files, tmp_path, strategy=strategy)
    built, _ = train.build_trainer(load_recipe(raw), tmp_path)
    assert any(isinstance(c, memory.ReturnFreedMemory) for c in built.callback_handler.callbacks) is expected


@pytest.mark.parametrize("overrides, fused", [
    (["model.config_overrides={attention_probs_dropout_prob: 0.0}"], True), ([], False)])
def test_attention_dropout_0_trains_the_text_default_through_the_fused_attention_kernel(tiny_bert, overrides, fused):
    """With attention dropout 0 (the switch BENCHMARKS.md measures), a training step takes torch's fused
    attention kernel; with BERT's 0.1, which the text default keeps, scaled_dot_product_attention falls
    back to the unfused path, which masks and rescales every score matrix."""
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.tasks.loaders import load_auto_model

    recipe = load_recipe(ROOT / "recipes/minilm_drugreview.yaml", [f"model.name_or_path={tiny_bert}", *overrides])
    model = load_auto_model(AutoModelForSequenceClassification, recipe.model, "model", num_labels=2).train()
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[:2, 8:] = 0  # padded rows, as a batch of real reviews has
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(input_ids=torch.randint(5, 20, (4, 12)), attention_mask=mask).logits.sum().backward()
    names = {event.key for event in prof.key_averages()}
    assert ("aten::_scaled_dot_product_flash_attention_for_cpu" in names) is fused, sorted(names)
    assert model.config.hidden_dropout_prob == 0.1


def test_lora_under_bf16_stores_its_frozen_linears_in_bf16_and_trains_the_same_adapter(tiny_bert, sentiment_files,
                                                                                      tmp_path, monkeypatch):
    """Under bf16 autocast LoRA's frozen linears are stored in bf16 while training (the memory they save:
    BENCHMARKS.md, LoRA memory); autocast casts them at every call anyway, so the adapter and the head train
    to the same bits as with fp32 storage, and the weights are fp32 again when training ends."""
    seen = []

    class Dtypes(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append({m.weight.dtype for m in memory.frozen_linears(model)})

    runs = {}
    for stored in (True, False):
        if not stored:
            monkeypatch.setattr(memory.FrozenLinearsInBf16, "on_train_begin", lambda *a, **k: None)
        raw = text_recipe(tiny_bert, sentiment_files, tmp_path / str(stored), strategy="lora")
        raw["training"] |= {"bf16": True, "eval_strategy": "no", "save_strategy": "no", "max_steps": 4}
        recipe = load_recipe(raw)
        built, _ = train.build_trainer(recipe, tmp_path / str(stored))
        built.add_callback(Dtypes())
        built.train()
        runs[stored] = {n: p.detach().clone() for n, p in built.model.named_parameters() if p.requires_grad}
        assert {p.dtype for p in built.model.parameters()} == {torch.float32}
    assert seen[:4] == [{torch.bfloat16}] * 4 and seen[4:] == [{torch.float32}] * 4
    assert any("lora_B" in n for n in runs[True]) and runs[True].keys() == runs[False].keys()
    for name, value in runs[True].items():
        assert torch.equal(value, runs[False][name]), name


@pytest.mark.parametrize("options, bf16, expected", [
    ({"strategy": "lora"}, True, True), ({"strategy": "lora"}, False, False),
    ({"strategy": "lora", "merge": True}, True, False), ({"strategy": "lora", "use_dora": True}, True, False),
    ({"strategy": "ia3"}, True, False), ({"strategy": "full"}, True, False),
])
def test_only_lora_without_merge_or_dora_stores_frozen_linears_in_bf16_and_only_under_bf16(
        tiny_bert, sentiment_files, tmp_path, options, bf16, expected):
    raw = text_recipe(tiny_bert, sentiment_files, tmp_path)
    raw["finetune"] = options
    raw["training"]["bf16"] = bf16
    built, _ = train.build_trainer(load_recipe(raw), tmp_path)
    callbacks = [c for c in built.callback_handler.callbacks if isinstance(c, memory.FrozenLinearsInBf16)]
    for callback in callbacks:
        callback.on_train_begin(built.args, None, None, model=built.model)
    stored = {m.weight.dtype for m in memory.frozen_linears(built.model)}
    assert (stored == {torch.bfloat16}) is expected, stored


def test_a_frozen_linear_tied_to_an_embedding_is_not_one_to_store_in_bf16():
    embed, tied, alone = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False), torch.nn.Linear(4, 4)
    tied.weight = embed.weight
    model = torch.nn.ModuleDict({"embed": embed, "out": tied, "alone": alone}).requires_grad_(False)
    assert memory.frozen_linears(model) == [alone]
    alone.weight.requires_grad_(True)
    assert memory.frozen_linears(model) == []
