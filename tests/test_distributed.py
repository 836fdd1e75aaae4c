"""The pipeline under launchers: two CPU processes (gloo) against one, resume, DeepSpeed extra, ZeRO-3 saves.

Multi-process tests launch the real entry point with `accelerate launch`; GPU-only checks are marked
`gpu` and skipped where CUDA is absent.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from hf_transfer import finetune
from hf_transfer import distributed
from hf_transfer.errors import DependencyError, OutputError, RecipeError
from tests.tiny import save_tiny_bert, text_recipe, write_sentiment_csv

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"
N_TEST = 55  # odd: two processes get unequal shares, the last batch is padded
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
needs_deepspeed = pytest.mark.skipif(not distributed.installed("deepspeed"), reason="deepspeed not installed")


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory):
    """Tiny BERT without dropout: each process draws its own dropout masks, which would differ."""
    folder = save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-nodrop"))
    config = json.loads((folder / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def data_55(tmp_path_factory):
    return write_sentiment_csv(tmp_path_factory.mktemp("data55"), n_train=48, n_test=N_TEST)


def recipe_for(model, files, out, per_device, **finetune_opts):
    recipe = text_recipe(model, files, out, **finetune_opts)
    recipe["training"] |= {"per_device_train_batch_size": per_device, "max_steps": 4, "learning_rate": 5e-3,
                           "use_cpu": True}  # cpu_2proc.yaml on a machine with a GPU too
    return recipe


def launch(config: str, recipe: dict, workdir: Path, *flags: str, launcher=()) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file CONFIG [launcher flags] scripts/finetune.py RECIPE [flags]`."""
    path = workdir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config), *launcher,
         str(ROOT / "scripts/finetune.py"), str(path), *flags],
        capture_output=True, text=True, env=env, cwd=workdir, timeout=600,
    )


def summaries(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith('  "output_dir"')]


@pytest.mark.slow  # several training subprocesses: the slow tier (CI runs it)
def test_two_cpu_processes_match_one_process(tiny_bert_no_dropout, data_55, tmp_path):
    """Acceptance 1: same global batch (1 x 8 vs 2 x 4), same seed -> same metrics; 55 test samples count 55."""
    single = finetune(recipe_for(tiny_bert_no_dropout, data_55, tmp_path / "single", per_device=8)).metrics
    work = tmp_path / "two"
    work.mkdir()
    proc = launch("cpu_2proc.yaml", recipe_for(tiny_bert_no_dropout, data_55, work / "out", per_device=4), work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(summaries(proc.stdout)) == 1, "only the main process prints the summary"
    assert proc.stderr.count("effective batch size 8 = 4 per device x 2 processes x 1") == 1
    assert sorted(p.name for p in work.iterdir()) == ["out", "recipe.yaml"]  # one output folder
    assert_same_metrics(single, json.loads((work / "out" / "metrics.json").read_text()), processes=2)


def assert_same_metrics(single: dict, many: dict, processes: int) -> None:
    """Same global batch (8), same seed -> what one process gets; 55 test samples count 55."""
    assert (many["effective_batch_size"], many["processes"]) == (8, processes)
    assert (single["effective_batch_size"], single["processes"]) == (8, 1)
    n_val = round(48 * 0.1)
    for split, n in (("validation", n_val), ("test", N_TEST)):
        key = "eval" if split == "validation" else "test"
        assert single[split][f"{key}_samples"] == many[split][f"{key}_samples"] == n  # none dropped or doubled
        for metric in ("accuracy", "f1_macro", "precision_macro", "recall_macro"):  # from gathered predictions: exact
            assert many[split][f"{key}_{metric}"] == single[split][f"{key}_{metric}"], (split, metric)
        # The Trainer's loss is a mean of per-batch means; the padded last batch of a process weighs
        # its kept samples slightly differently (measured differences: 6e-4 validation, 3e-5 test).
        assert many[split][f"{key}_loss"] == pytest.approx(single[split][f"{key}_loss"], abs=2e-3)
    assert many["train"]["train_loss"] == pytest.approx(single["train"]["train_loss"], abs=1e-6)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_machines(config: str, recipe: dict, workdir: Path, machines: int, timeout: int = 600) -> list[tuple]:
    """`accelerate launch --machine_rank R ...` once per "machine", all on this one (127.0.0.1, one free
    port): (returncode, stdout, stderr) per machine rank. Whatever still runs at the end (a timeout, a
    failed assertion) is killed with its workers."""
    import signal

    path = workdir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    port, procs, logs = str(_free_port()), [], workdir.parent / f"{workdir.name}-logs"
    logs.mkdir()  # files, not pipes: a full pipe of one machine would stall the other at a collective
    try:
        for rank in range(machines):
            flags = ["--num_machines", str(machines), "--machine_rank", str(rank), "--num_processes", str(machines),
                     "--main_process_ip", "127.0.0.1", "--main_process_port", port]
            with open(logs / f"{rank}.out", "w") as out, open(logs / f"{rank}.err", "w") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
                     *flags, str(ROOT / "scripts/finetune.py"), str(path)],
                    stdout=out, stderr=err, env=env, cwd=workdir,
                    start_new_session=True,  # its own process group: killed together with its torchrun workers
                ))
        deadline = time.monotonic() + timeout
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
        return [(code, (logs / f"{r}.out").read_text(), (logs / f"{r}.err").read_text()) for r, code in enumerate(codes)]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.mark.slow  # two launchers, two training processes
def test_two_machines_match_one_process(tiny_bert_no_dropout, data_55, tmp_path):
    """Two "machines" on this one (multi_node_cpu.yaml, machine ranks 0 and 1, gloo) train like one
    process with the same global batch; only machine 0 writes the folder and prints the summary."""
    single = finetune(recipe_for(tiny_bert_no_dropout, data_55, tmp_path / "single", per_device=8)).metrics
    work = tmp_path / "nodes"
    work.mkdir()
    results = launch_machines("multi_node_cpu.yaml", recipe_for(tiny_bert_no_dropout, data_55, work / "out",
                                                                 per_device=4), work, machines=2)
    for rank, (code, _, err) in enumerate(results):
        assert code == 0, (rank, err[-3000:])
    (_, out0, err0), (_, out1, err1) = results
    assert len(summaries(out0)) == 1 and not summaries(out1), "only machine 0 prints the summary"
    assert err0.count("effective batch size 8 = 4 per device x 2 processes x 1") == 1
    assert "effective batch size" not in err1  # the other machine logs warnings only
    assert sorted(p.name for p in work.iterdir()) == ["out", "recipe.yaml"]  # one folder, no lock left behind
    assert_same_metrics(single, json.loads((work / "out" / "metrics.json").read_text()), processes=2)


@pytest.mark.slow
def test_a_locked_folder_stops_both_machines_with_one_line(tiny_bert_no_dropout, data_55, tmp_path):
    """Only machine 0 takes the lock and checks the folder; its refusal reaches machine 1, which stops with
    the same line (not a broken barrier); the folder and the other run's lock are left as they were."""
    import socket

    from hf_transfer.folder import lock_path

    work = tmp_path / "nodes"
    work.mkdir()
    lock = lock_path(work / "out")
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live run (this test) holds the folder
    recipe = recipe_for(tiny_bert_no_dropout, data_55, work / "out", per_device=4)
    results = launch_machines("multi_node_cpu.yaml", recipe, work, machines=2, timeout=300)
    for rank, (code, _, err) in enumerate(results):
        assert code != 0, rank
        assert f"hf-transfer: error: training.output_dir: {work / 'out'} is in use by another run (process {os.getpid()}" \
            in err, (rank, err[-3000:])
    assert sorted(p.name for p in work.iterdir()) == [lock.name, "recipe.yaml"]  # nothing written


@pytest.mark.parametrize("config, device", [
    pytest.param("cpu_2proc.yaml", "cpu", marks=pytest.mark.slow),
    pytest.param("deepspeed_zero3.yaml", "cpu", marks=[pytest.mark.slow, needs_deepspeed]),
    pytest.param("deepspeed_zero3.yaml", "cuda", marks=[gpu, needs_cuda, needs_deepspeed]),
])
def test_resume_under_a_launcher(config, device, tiny_bert_no_dropout, data_55, tmp_path):
    """An interrupted LoRA run resumed with --resume ends where the uninterrupted run ends."""
    import shutil

    from safetensors.torch import load_file
    from transformers import pipeline

    zero3, gpu_run = config.startswith("deepspeed"), device == "cuda"
    lora = {"strategy": "lora", "r": 4, "merge": not zero3}  # merge is refused under ZeRO-3
    gpus = ["--num_processes", str(torch.cuda.device_count())] if gpu_run else []
    if zero3 and not gpu_run:
        gpus = ["--num_processes", "2", "--mixed_precision", "no"]

    def recipe_in(out):
        recipe = (_gpu_recipe if gpu_run else recipe_for)(tiny_bert_no_dropout, data_55, out, per_device=4, **lora)
        if zero3 and not gpu_run:
            recipe["training"] |= {"use_cpu": False, "ddp_backend": "gloo"}  # DeepSpeed on the CPU
        return recipe

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for work in (whole, cut):
        work.mkdir()
        proc = launch(config, recipe_in(work / "out"), work, launcher=gpus)
        assert proc.returncode == 0, proc.stderr[-3000:]
    # "interrupt" the second run after step 2: drop its last checkpoint and its final outputs
    out = cut / "out"
    for path in out.iterdir():
        if path.name != "checkpoints":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    state = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    written = state.stat().st_mtime_ns  # a run restarted from scratch would write checkpoint-2 again
    proc = launch(config, recipe_in(out), cut, "--resume", launcher=gpus)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("--resume: continuing from") == 1 and "checkpoint-2" in proc.stderr
    assert state.stat().st_mtime_ns == written and (out / "checkpoints" / "checkpoint-4").is_dir()
    a = json.loads((whole / "out" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_f1_macro", "test_samples"):
        assert b["test"][key] == a["test"][key], key
    assert b["test"]["test_loss"] == pytest.approx(a["test"]["test_loss"], abs=1e-5 if not gpu_run else 1e-2)
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("classifier" in k for k in adapter) and all(t.numel() > 0 for t in adapter.values())
    if not zero3:
        merged = pipeline("text-classification", model=str(out / "merged"), device="cpu")
        assert len(merged(["good great drug", "awful pain"])) == 2


def test_a_finished_command_destroys_a_one_process_group_and_a_failed_one_leaves_it(tmp_path, capsys):
    """A failed rank must not take part in an orderly shutdown; a one-process group ends the ordinary way."""
    import torch.distributed as dist

    from hf_transfer.cli import main

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert main(["validate", str(tmp_path / "missing.yaml")]) == 2  # refused: the group stays
        assert dist.is_initialized()
        assert main(["recipes"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert "missing.yaml" in capsys.readouterr().err


RANK_SCRIPT = """
import atexit, os, sys
import torch.distributed as dist
from hf_transfer.cli import main

rank, store, marks = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2)
dist.barrier()
atexit.register(lambda: open(f"{marks}/exit-handler-{rank}", "w").close())


class Teardown:  # finalized only by the interpreter's teardown (what it needs is bound beforehand)
    def __del__(self, write=os.write, fd=os.open(f"{marks}/teardown-{rank}", os.O_WRONLY | os.O_CREAT)):
        write(fd, b"finalized")


kept = Teardown()
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.parametrize("command, code, teardown", [(["recipes"], 0, False), (["validate", "missing.yaml"], 2, True)])
def test_a_launched_process_that_finished_skips_the_interpreter_teardown(command, code, teardown, tmp_path, capsys):
    """gloo's threads outlive destroy_process_group (DDP and DeepSpeed still hold the groups) and a rank
    that had finished and saved aborted during interpreter teardown in CI (the ZeRO-3 tests, twice):
    in a two-process group a finished command runs its exit handlers, prints all of its output and
    leaves with its code, without that teardown; a refused one (exit 2) ends the ordinary way."""
    from hf_transfer.cli import main

    main(["recipes"])
    expected = capsys.readouterr().out
    script, marks = tmp_path / "rank.py", tmp_path / "marks"
    script.write_text(RANK_SCRIPT)
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(tmp_path / "store"), str(marks), *command],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for rank in (0, 1)]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for rank, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == code, err[-2000:]
        assert (marks / f"exit-handler-{rank}").exists()
        assert (marks / f"teardown-{rank}").read_bytes() == (b"finalized" if teardown else b"")
        if code == 0:
            assert out == expected  # all of it: what the command prints outside a launcher
        else:
            assert err.strip().splitlines()[-1].startswith("hf-transfer: error:") and "missing.yaml" in err


def test_missing_deepspeed_is_one_line(monkeypatch, tiny_bert, sentiment_files, tmp_path, capsys):
    from hf_transfer.cli import main

    monkeypatch.setattr(distributed, "installed", lambda name: False)
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["training"]["deepspeed"] = "ds.json"
    with pytest.raises(DependencyError, match=r"^training.deepspeed asks for DeepSpeed, .*hf-transfer-learning\[deepspeed\]"):
        finetune(recipe)
    recipe["training"].pop("deepspeed")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what accelerate launch sets for a DeepSpeed config
    assert main(["finetune", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hf-transfer: error: the launcher's Accelerate config (distributed_type: DEEPSPEED) "
                   "asks for DeepSpeed, which is not installed: pip install 'hf-transfer-learning[deepspeed]'"]
    assert not (tmp_path / "out").exists()  # failed before anything was written


def test_saved_weights_with_an_empty_tensor_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"lora_A": torch.ones(2, 4), "classifier.weight": torch.empty(0)}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(OutputError, match="1 empty tensors .*zero3_save_16bit_model"):
        distributed.check_saved_weights(tmp_path)
    save_file({"lora_A": torch.ones(2, 4)}, tmp_path / "adapter_model.safetensors")
    assert distributed.check_saved_weights(tmp_path) == {"adapter_model.safetensors": 1}
    save_file({}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(OutputError, match="holds no tensors; under DeepSpeed ZeRO-3"):
        distributed.check_saved_weights(tmp_path)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(OutputError, match="no weights .* zero3_save_16bit_model"):
        distributed.check_saved_weights(tmp_path / "nothing")


def test_merge_is_refused_when_weights_are_sharded(tiny_bert, sentiment_files, tmp_path):
    from hf_transfer.validate import load_recipe
    from hf_transfer.train import _check_merge

    recipe = load_recipe(text_recipe(tiny_bert, sentiment_files, tmp_path, strategy="lora", merge=True))
    zero3 = SimpleNamespace(is_deepspeed_enabled=True, accelerator=SimpleNamespace(
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3))))
    with pytest.raises(RecipeError, match="^finetune.merge: not available under DeepSpeed ZeRO-3"):
        _check_merge(zero3, recipe)
    zero3.accelerator.state.deepspeed_plugin.zero_stage = 2
    _check_merge(zero3, recipe)  # ZeRO-2 keeps whole weights on every process
    _check_merge(SimpleNamespace(is_fsdp_enabled=False), recipe)


def test_parameter_count_uses_the_full_size_of_zero3_shards():
    from hf_transfer.strategies import count_parameters

    model = torch.nn.Linear(4, 3)
    for p in model.parameters():  # what ZeRO-3 leaves on a process: an empty tensor and ds_numel
        p.ds_numel = p.numel()
        p.data = torch.empty(0)
    model.bias.requires_grad_(False)
    assert count_parameters(model) == (12, 15)


def _accuracy_of(clf, files) -> float:
    import pandas as pd

    test = pd.read_csv(files["test"])
    return sum(r["label"] == y for r, y in zip(clf(list(test["review"])), test["label"])) / len(test)


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("strategy", [{"strategy": "lora", "r": 4}, {"strategy": "full"}])
def test_zero3_on_cpu_saves_whole_weights_that_reload(strategy, tiny_bert_no_dropout, data_55, tmp_path):
    """DeepSpeed ZeRO-3 over 2 CPU processes (gloo): the saved adapter + head, or the consolidated
    model, is non-empty, reloads without hf-transfer, and scores what the run reported; training
    matches one process with the same global batch."""
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

    single = finetune(recipe_for(tiny_bert_no_dropout, data_55, tmp_path / "single", per_device=8, **strategy))
    out = tmp_path / "z3" / "out"
    out.parent.mkdir()
    recipe = recipe_for(tiny_bert_no_dropout, data_55, out, per_device=4, **strategy)
    recipe["training"] |= {"use_cpu": False, "ddp_backend": "gloo"}  # DeepSpeed's CPU accelerator, gloo
    proc = launch("deepspeed_zero3.yaml", recipe, out.parent, launcher=["--num_processes", "2", "--mixed_precision", "no"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["processes"], metrics["effective_batch_size"], metrics["test"]["test_samples"]) == (2, 8, N_TEST)
    assert (metrics["trainable_parameters"], metrics["total_parameters"]) == (
        single.metrics["trainable_parameters"], single.metrics["total_parameters"])  # ZeRO-3 shards counted whole
    assert metrics["train"]["train_loss"] == pytest.approx(single.metrics["train"]["train_loss"], abs=1e-5)
    assert metrics["test"]["test_accuracy"] == single.metrics["test"]["test_accuracy"]
    if strategy["strategy"] == "lora":
        saved = load_file(out / "adapter_model.safetensors")
        assert any("classifier" in k for k in saved) and any("lora_B" in k for k in saved)
        config = AutoConfig.from_pretrained(out)
        model = AutoPeftModelForSequenceClassification.from_pretrained(
            out, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)
    else:
        saved = load_file(out / "model.safetensors")
        model = AutoModelForSequenceClassification.from_pretrained(out)
    assert saved and all(t.numel() > 0 for t in saved.values())
    clf = pipeline("text-classification", model=model, tokenizer=str(out), device="cpu")
    assert _accuracy_of(clf, data_55) == metrics["test"]["test_accuracy"]


# --------------------------------------------------------------------------- GPU only


def _gpu_recipe(tiny_bert, files, out, per_device=4, **strategy):
    recipe = recipe_for(tiny_bert, files, out, per_device=per_device, **strategy)
    recipe["training"]["use_cpu"] = False
    return recipe


@gpu
@needs_cuda
@pytest.mark.parametrize("config", ["single_gpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_full_finetune_under_gpu_configs_saves_a_loadable_model(config, tiny_bert, data_55, tmp_path):
    if "deepspeed" in config and not distributed.installed("deepspeed"):
        pytest.skip("deepspeed not installed")
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "out"
    processes = ["--num_processes", str(torch.cuda.device_count())] if "deepspeed" in config else []
    proc = launch(config, _gpu_recipe(tiny_bert, data_55, out), tmp_path, launcher=processes)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["test_samples"] == N_TEST
    model = AutoModelForSequenceClassification.from_pretrained(out)  # consolidated: loads whole
    assert all(p.numel() > 0 for p in model.parameters())


@gpu
@needs_cuda
@needs_deepspeed
def test_lora_under_zero3_saves_a_non_empty_adapter_and_head_that_reload(tiny_bert, data_55, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file
    from transformers import AutoConfig

    out = tmp_path / "out"
    recipe = _gpu_recipe(tiny_bert, data_55, out, strategy="lora", r=4)
    proc = launch("deepspeed_zero3.yaml", recipe, tmp_path, launcher=["--num_processes", str(torch.cuda.device_count())])
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = load_file(out / "adapter_model.safetensors")
    heads = [k for k in saved if "classifier" in k]
    loras = [k for k in saved if "lora_A" in k or "lora_B" in k]
    assert heads and loras and all(saved[k].numel() > 0 for k in saved)
    config = AutoConfig.from_pretrained(out)
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        out, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)
    state = model.state_dict()
    for key in heads:  # the reloaded head is the trained one, not a fresh initialisation
        reloaded = state[key.replace("classifier.", "classifier.modules_to_save.default.")]
        assert torch.allclose(reloaded.float().cpu(), saved[key].float().cpu()), key
    # the reloaded adapter + head reproduce the run's test accuracy (bf16 training, fp32 reload: +-2 samples)
    from transformers import pipeline

    clf = pipeline("text-classification", model=model, tokenizer=str(out), device="cpu")
    expected = json.loads((out / "metrics.json").read_text())["test"]["test_accuracy"]
    assert abs(_accuracy_of(clf, data_55) - expected) <= 2 / N_TEST


def test_gradient_accumulation_matches_the_larger_batch(tiny_bert_no_dropout, data_55, tmp_path):
    """4 x 2 accumulation steps trains like a batch of 8 (the loss is averaged, not summed)."""
    big = finetune(recipe_for(tiny_bert_no_dropout, data_55, tmp_path / "big", per_device=8)).metrics
    recipe = recipe_for(tiny_bert_no_dropout, data_55, tmp_path / "acc", per_device=4)
    recipe["training"]["gradient_accumulation_steps"] = 2
    acc = finetune(recipe).metrics
    assert acc["effective_batch_size"] == big["effective_batch_size"] == 8
    assert acc["train"]["train_loss"] == pytest.approx(big["train"]["train_loss"], abs=1e-4)
    assert acc["test"]["test_loss"] == pytest.approx(big["test"]["test_loss"], abs=1e-4)


@pytest.mark.parametrize("launcher, training, expected", [
    ("bf16", {}, {"bf16": True}),
    ("fp16", {"learning_rate": 1e-4}, {"fp16": True}),
    ("bf16", {"bf16": False}, {}),   # the recipe's own choice wins
    ("no", {}, {}),
    (None, {}, {}),
])
def test_the_launchers_mixed_precision_reaches_training_arguments(launcher, training, expected, monkeypatch):
    # DeepSpeed configs with `mixed_precision: bf16` enable bf16 in DeepSpeed; Trainer refuses a
    # TrainingArguments with bf16=False beside it (seen on a GPU with deepspeed_zero2/3.yaml).
    from hf_transfer.precision import launcher_precision

    if launcher is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    assert launcher_precision(training) == expected


@pytest.mark.parametrize("native, launcher, training, expected", [
    (True, None, {"bf16": "auto"}, {"bf16": True}),
    (False, None, {"bf16": "auto"}, {"bf16": False}),
    (True, "fp16", {"bf16": "auto"}, {}),                          # the launcher's precision wins
    (True, None, {"bf16": "auto", "fp16": True}, {"fp16": True}),  # so does the recipe's fp16
    (True, None, {"bf16": False}, {"bf16": False}),                # an explicit choice is kept
])
def test_bf16_auto_follows_the_hardware(native, launcher, training, expected, monkeypatch):
    from hf_transfer import precision

    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    if launcher is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    assert precision.resolve_bf16(training) == expected


def test_native_bf16_asks_torch_about_this_cpu(monkeypatch):
    import torch

    from hf_transfer import precision

    monkeypatch.setattr(precision, "has_accelerator", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, expected in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert precision.native_bf16() is expected


def test_bf16_takes_auto_or_a_boolean(tmp_path):
    from hf_transfer.errors import RecipeError
    from hf_transfer.validate import load_recipe

    recipe = (ROOT / "recipes/minilm_drugreview.yaml").read_text()
    assert load_recipe(ROOT / "recipes/minilm_drugreview.yaml").training["bf16"] == "auto"
    path = tmp_path / "r.yaml"
    path.write_text(recipe.replace("bf16: auto", "bf16: maybe"))
    with pytest.raises(RecipeError, match="training.bf16"):
        load_recipe(path)
