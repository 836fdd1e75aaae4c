"""The model card (README.md) of a finished run, built with huggingface_hub's card tools.

Metadata (`ModelCardData`): base_model, datasets (Hub ids only), library_name (transformers, or
peft for adapters), pipeline_tag and tags (so the Hub shows the right widget), and the evaluation
metrics as model-index `EvalResult`s. The body: what the model is, its labels, how to load it,
the data, the strategy and hyper-parameters, the trainable-parameter share, the metrics, a link to
report.html, the transfer report (report.md) when the folder has one, and intended use and limitations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hf_transfer.outputs.hubuser import PEFT_AUTO
from hf_transfer.outputs.hubuser import processor_class
from hf_transfer.folder import REPORT_HTML
from hf_transfer.recipe.schema import Recipe, file_patterns
from hf_transfer.outputs.multitask import TASK_KEY, read_run
from hf_transfer.strategies import STRATEGIES
from hf_transfer.tasks import TASKS
from hf_transfer.tasks.base import Task

CARD = "README.md"
REPORT = "report.md"
SPLIT_PREFIX = {"test": "test", "validation": "eval"}
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def hub_base_model(recipe: Recipe, override: str | None = None) -> str | None:
    """The base model's Hub id: hub.base_model, else model.name_or_path when it is not a local folder."""
    if override or recipe.hub.base_model:
        return override or recipe.hub.base_model
    name = recipe.model.name_or_path
    if Path(name).expanduser().exists() or not _HUB_ID.match(name):
        return None
    return name


def _hub_dataset(recipe: Recipe) -> str | None:
    d = recipe.data
    return None if d.data_files else d.path


def files_label(data_files: dict[str, str | list[str]]) -> str:
    """`split: name, split: name + name` for a data section's files (their names, not their folders)."""
    return ", ".join(f"{k}: {' + '.join(Path(p).name for p in file_patterns(v))}" for k, v in data_files.items())


def _dataset_label(recipe: Recipe) -> str:
    d = recipe.data
    if not d.data_files:
        return f"{d.path}" + (f" ({d.name})" if d.name else "")
    parents = {Path(f).parent.name for v in d.data_files.values() for f in file_patterns(v)}
    return f"{'/'.join(sorted(parents)) or 'local'} ({d.path} files)"


def eval_results(recipe: Recipe, metrics: dict[str, Any], task: Task, model_name: str):
    from huggingface_hub import EvalResult

    results, names = [], task.metric_names
    dataset = _hub_dataset(recipe) or _dataset_label(recipe).split(" ")[0]
    for role, prefix in SPLIT_PREFIX.items():
        split = recipe.data.test_split if role == "test" else (
            f"{recipe.data.train_split} (validation carved)" if _carved(recipe.data) else recipe.data.validation_split)
        for key, value in (metrics.get(role) or {}).items():
            name = key.removeprefix(prefix + "_")
            if name not in names or not isinstance(value, (int, float)):
                continue
            metric_type, metric_name, metric_args = names[name]
            results.append(EvalResult(
                task_type=task.pipeline_task, dataset_type=dataset, dataset_name=_dataset_label(recipe),
                dataset_config=recipe.data.name, dataset_split=split, metric_type=metric_type,
                metric_name=metric_name, metric_args=metric_args, metric_value=float(value),
            ))
    return results


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def build_card(out_dir: str | Path, repo_id: str | None = None, base_model: str | None = None,
               merged_repo_id: str | None = None, merged: bool = False):
    """A huggingface_hub.ModelCard for a finished run in `out_dir` (not written).

    `merged`: the card of the run's `merged/` folder (a plain model) rather than of its adapter.
    """
    from huggingface_hub import ModelCard, ModelCardData

    out = Path(out_dir)
    recipe, metrics = read_run(out)
    config = _read_json(out / "config.json")
    adapter = (out / "adapter_config.json").is_file() and not merged
    task = TASKS[recipe.task]
    base = hub_base_model(recipe, base_model) if recipe.model.pretrained else None
    model_name = (repo_id or out.resolve().name).split("/")[-1]
    strategy = recipe.finetune.strategy
    tags = ["hf-transfer", task.pipeline_task, f"strategy-{strategy}"] + ([strategy] if STRATEGIES[strategy].peft else [])
    data = ModelCardData(
        model_name=model_name,
        base_model=base,
        datasets=[_hub_dataset(recipe)] if _hub_dataset(recipe) else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=task.pipeline_task,
        tags=tags,
        metrics=sorted({task.metric_names[k][0] for k in _metric_names(metrics, task)}) or None,
        eval_results=eval_results(recipe, metrics, task, model_name) or None,
        license=recipe.hub.license,
        language=recipe.hub.language,
        widget=_widget(recipe, task),
    )
    if merged_repo_id:
        recipe.hub.merged_repo_id = merged_repo_id
    body = _body(out, recipe, metrics, config, adapter, task, base, repo_id or str(out), model_name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_card(out_dir: str | Path) -> Path:
    path = Path(out_dir) / CARD
    build_card(out_dir).save(path)
    return path


def _metric_names(metrics: dict[str, Any], task: Task) -> list[str]:
    names = []
    for role, prefix in SPLIT_PREFIX.items():
        names += [k.removeprefix(prefix + "_") for k in metrics.get(role) or {}]
    fixed = list(task.metric_names)  # the record's own names first, then derived ones (per entity type)
    return sorted((n for n in dict.fromkeys(names) if n in task.metric_names), key=lambda n: n not in fixed)


def _body(out, recipe, metrics, config, adapter, task, base, where, model_name) -> str:
    sections = [
        f"# {model_name}\n\n{_intro(recipe, adapter, task, base)}",
        _labels_section(config, recipe, task),
        "## How to use\n\n" + _snippet(where, task, adapter, recipe),
        _training_section(recipe, metrics, base),
        _evaluation_section(metrics, task),
        _results_section(metrics, task),
        _report_link(out),
        collapse_section(metrics),
    ]
    report = out / REPORT
    if report.is_file():
        sections.append("## Transfer report\n\n" + report.read_text(encoding="utf-8").strip())
    sections += [_limitations(recipe, task), _versions_section(metrics)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _report_link(out: Path) -> str:
    if not (out / REPORT_HTML).is_file():
        return ""
    return (f"The run's report, one self-contained page with its training curves and per-class scores or "
            f"confusion matrices where they apply: [{REPORT_HTML}]({REPORT_HTML}).")


def collapse_section(metrics: dict[str, Any]) -> str:
    collapse = metrics.get("collapse")
    if not collapse:
        return ""
    shares = ", ".join(f"{role}: {share:.0%} of the examples" for role, share in collapse["splits"].items())
    return (f"## Warning: collapsed predictions\n\nThis model predicts one class for almost every example "
            f"({shares}); its metrics are those of a constant prediction. Likely causes and what to try: "
            f"{collapse['hint']}.")


def _intro(recipe: Recipe, adapter: bool, task: Task, base: str | None) -> str:
    origin = f"[{base}](https://huggingface.co/{base})" if base else f"`{recipe.model.name_or_path}`"
    what = "A LoRA adapter (with its classification head) for" if adapter else "A fine-tuned version of"
    if not recipe.model.pretrained:
        what, origin = "A model with the architecture of", f"{origin}, trained from random initialisation,"
    kind = "" if task.score_texts else f" ({recipe.data.problem_type.replace('_', ' ')})"
    return (
        f"{what} {origin} for {task.pipeline_task}{kind} on "
        f"{_dataset_label(recipe)}, trained with hf-transfer (strategy: `{recipe.finetune.strategy}`)."
    )


def _labels_section(config: dict[str, Any], recipe: Recipe, task: Task) -> str:
    if task.score_texts:
        return "## Output\n\nA transcript per clip (scored as WER / CER on normalised text)."
    id2label = config.get("id2label") or dict(enumerate(config.get("label_names") or []))  # timm: label_names
    if recipe.data.problem_type == "regression" or not id2label:
        return "## Output\n\nOne regression score per input."
    rows = "\n".join(f"| {i} | {label} |" for i, label in sorted(id2label.items(), key=lambda kv: int(kv[0])))
    return f"## Labels\n\n| id | label |\n|---|---|\n{rows}"


def _snippet(where: str, task: Task, adapter: bool, recipe: Recipe) -> str:
    example = task.example
    call = 'aggregation_strategy="simple"' if task.entities else "" if task.score_texts else "top_k=None"
    if task.modality == "text" and not task.entities:
        call += ", truncation=True"  # the saved tokenizer's model_max_length is the run's model.max_length
    if not adapter:
        return (
            f'```python\nfrom transformers import pipeline\n\nclf = pipeline("{task.pipeline_task}", model="{where}")\n'
            f"clf({', '.join(a for a in (example, call) if a)})\n```"
        )
    auto = PEFT_AUTO.get(task.peft_task_type, "AutoPeftModel")
    merged = ""
    if getattr(recipe.finetune, "merge", False) and not recipe.hub.merged_repo_id:
        merged = (
            f'\n\nThe adapter merged into a plain model is in the `merged/` subfolder:\n'
            f'`{task.auto_class}.from_pretrained("{where}", subfolder="merged")`.'
        )
    elif recipe.hub.merged_repo_id:
        merged = f"\n\nThe adapter merged into a plain model: [{recipe.hub.merged_repo_id}](https://huggingface.co/{recipe.hub.merged_repo_id})."
    if task.peft_task_type in PEFT_AUTO:
        imports, processor = "AutoConfig, AutoTokenizer, pipeline", f'tokenizer=AutoTokenizer.from_pretrained("{where}")'
        head = ""
    else:  # the base model's own head gives way to the adapter's saved one
        auto_processor = processor_class({"processor": task.processor_arg})
        imports = f"AutoConfig, {auto_processor}, pipeline"
        processor = f'{task.processor_arg}={auto_processor}.from_pretrained("{where}")'
        head = ", ignore_mismatched_sizes=True"
    return (
        "```python\nfrom peft import " + auto + f"\nfrom transformers import {imports}\n\n"
        f'config = AutoConfig.from_pretrained("{where}")  # the labels\n'
        f'model = {auto}.from_pretrained(\n    "{where}", num_labels=config.num_labels, '
        f"id2label=config.id2label, label2id=config.label2id{head})\n"
        f'clf = pipeline("{task.pipeline_task}", model=model, {processor})\n'
        f"clf({', '.join(a for a in (example, call) if a)})\n```" + merged
    )


def _training_section(recipe: Recipe, metrics: dict[str, Any], base: str | None) -> str:
    d, ft = recipe.data, recipe.finetune
    options = ", ".join(f"{k}={v}" for k, v in vars(ft).items() if k != "strategy") or "none"
    lines = [
        f"- Base model: {base or recipe.model.name_or_path} (pretrained: {recipe.model.pretrained})",
        f"- Data: `{d.path}`" + (f" ({d.name})" if d.name else "")
        + (f", files {files_label(d.data_files)}" if d.data_files else ""),
        f"- Splits: train `{d.train_split}`, validation "
        + (f"`{d.validation_split}`" if not _carved(d) else f"carved from train ({d.validation_size:.0%})")
        + f", test `{d.test_split}`",
        f"- Strategy: `{ft.strategy}` ({options})",
    ]
    lines += _objective_lines(recipe, metrics)
    if metrics.get("trainable_parameters") and metrics.get("total_parameters"):
        t, n = metrics["trainable_parameters"], metrics["total_parameters"]
        lines.append(f"- Trainable parameters: {t:,} of {n:,} ({100 * t / n:.2f}%)")
    if metrics.get("trained_modules"):
        parts = ", ".join(f"`{k}` {v:,}" for k, v in metrics["trained_modules"].items())
        lines.append(f"- Trained: {parts}")
    if metrics.get("effective_batch_size"):
        lines.append(f"- Effective batch size: {metrics['effective_batch_size']}")
    runtime = (metrics.get("train") or {}).get("train_runtime")
    if runtime:
        lines.append(f"- Training time: {runtime:.0f} s")
    hyper = {k: v for k, v in recipe.training.items() if k not in ("output_dir", "hub_token")}
    hyper["max_length"] = recipe.model.max_length
    table = "\n".join(f"| {k} | {v} |" for k, v in hyper.items())
    return "## Training\n\n" + "\n".join(lines) + f"\n\nHyper-parameters (the recipe's `training` section):\n\n| key | value |\n|---|---|\n{table}"


def _extra_data(extra) -> str:
    files = f", files {files_label(extra.data_files)}" if extra.data_files else ""
    cap = f", at most {extra.max_samples:,} rows" if extra.max_samples else ""
    return f"`{extra.path}`{files}, split `{extra.split}`{cap}"


def _objective_lines(recipe: Recipe, metrics: dict[str, Any]) -> list[str]:
    """What the recipe added to the task loss: the teacher it was distilled from, the domain it adapted to."""
    lines = []
    if metrics.get(TASK_KEY):
        lines.append(multitask_line(metrics[TASK_KEY]))
    if recipe.distill is not None:
        k = recipe.distill
        lines.append(f"- Distilled from: `{k.teacher}` (alpha {k.alpha}, temperature {k.temperature})")
        if k.unlabelled is not None:
            count = metrics.get("unlabelled_examples")
            lines.append(f"- Unlabelled inputs labelled by the teacher: {_extra_data(k.unlabelled)}"
                         + (f" ({count:,} examples)" if count else ""))
    if recipe.domain is not None:
        m = recipe.domain
        how = {"none": "none (source-only training; the target is only evaluated)",
               "target_bn": "target_bn (target batches through batch-norm, no adaptation loss)"}
        lines.append(f"- Domain adaptation: {how.get(m.method, f'`{m.method}`, weight {m.weight}')}, "
                     f"target {_extra_data(m.target)}" + (f", evaluated on split `{m.target.eval_split}`"
                                                          if m.target.eval_split else ""))
    return lines


def multitask_line(run: dict[str, Any]) -> str:
    """What a multi-task run's task folder was trained with (metrics[TASK_KEY] of its view)."""
    tasks = ", ".join(f"`{t['name']}` (column `{t['label_column']}`, weight {t['weight']:g})" for t in run["tasks"])
    return (f"- Multi-task: this is task `{run['task']}` of a run that trained {tasks} on one shared backbone, "
            f"with loss = Σ weight · task loss; the checkpoint was selected by validation "
            f"`{run['metric_for_best_model']}`")


def _carved(d) -> bool:
    """Whether the validation split was carved from train (known for local files)."""
    return not d.validation_split or bool(d.data_files and d.validation_split not in d.data_files)


def _evaluation_section(metrics: dict[str, Any], task: Task) -> str:
    names = _metric_names(metrics, task)
    if not names:
        return ""
    head = "| split | " + " | ".join(task.metric_names[n][1] for n in names) + " |"
    rows = []
    for role, prefix in (SPLIT_PREFIX | {"target": "target"}).items():  # target: domain.target's labelled split
        if metrics.get(role):
            vals = [metrics[role].get(f"{prefix}_{n}") for n in names]
            name = "target domain" if role == "target" else role
            rows.append(f"| {name} | " + " | ".join("" if v is None else f"{v:.4f}" for v in vals) + " |")
    sep = "|---" * (len(names) + 1) + "|"
    return "## Evaluation\n\n" + "\n".join([head, sep, *rows])


def _widget(recipe: Recipe, task: Task) -> list[dict[str, str]] | None:
    """The Hub's inference widget example for text tasks: the first text of a local test (or validation)
    csv, else the task's own example; image and audio widgets take the user's upload."""
    if task.modality != "text":
        return None
    text = _first_text(recipe) if not task.entities else None
    return [{"text": text or task.example.strip('"')}]


def _first_text(recipe: Recipe) -> str | None:
    import csv

    d = recipe.data
    files = d.data_files or {}
    path = files.get(d.test_split or "") or files.get(d.validation_split or "")
    path = file_patterns(path)[0] if path else None
    if not path or not str(path).endswith(".csv") or not Path(path).is_file():
        return None
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                text = (row.get(d.text_column) or "").strip()
                if text:
                    return text[:500]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


def _results_section(metrics: dict[str, Any], task: Task) -> str:
    """Per evaluation (each epoch by default): training loss (the last logged before it), validation
    loss and the task's metrics, from the Trainer's log in metrics.json."""
    history = metrics.get("log_history") or []
    names = [n for n in task.metric_names if any(f"eval_{n}" in e for e in history)]
    rows, seen, last_loss = [], set(), None
    for entry in history:
        if "loss" in entry:
            last_loss = entry["loss"]
        if "eval_loss" not in entry or (entry.get("step"), entry.get("epoch")) in seen:
            continue
        seen.add((entry.get("step"), entry.get("epoch")))
        cells = [f"{entry.get('epoch', 0):.2f}", str(entry.get("step", "")),
                 "" if last_loss is None else f"{last_loss:.4f}", f"{entry['eval_loss']:.4f}"]
        cells += [f"{entry[f'eval_{n}']:.4f}" if f"eval_{n}" in entry else "" for n in names]
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = ["epoch", "step", "training loss", "validation loss"] + [task.metric_names[n][1] for n in names]
    return ("## Training results\n\n| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|\n"
            + "\n".join(rows))


def _versions_section(metrics: dict[str, Any]) -> str:
    versions = metrics.get("versions") or {}
    if not versions:
        return ""
    return "## Framework versions\n\n" + "\n".join(f"- {name} {v}" for name, v in versions.items())


def _limitations(recipe: Recipe, task: Task) -> str:
    kind = "speech recognition" if task.score_texts else recipe.data.problem_type.replace("_", " ")
    return (
        "## Intended use and limitations\n\n"
        f"Intended for {kind} of inputs like those of the training "
        "data above. The figures above were measured on its held-out splits only; expect lower quality on "
        "other domains, languages or label definitions, and check it on your own data before relying on it. "
        "The model inherits the biases of its pretrained base and of the training data; do not use it alone "
        "for decisions about people (for example medical or hiring decisions)."
    )
