"""Recipe validation: YAML data -> the typed Recipe, with every rule that spans sections.

Each section is built from its dataclass (recipe/typed.py: unknown keys, wrong types); the task's own
section from its record's `options` (hf_transfer.tasks.TASKS), the `finetune` section from the
strategy's (hf_transfer.strategies.STRATEGIES); `training` against `transformers.TrainingArguments`'s
own fields (recipe/training.py). Then the rules that span sections: the task and the
modality, multi-task, cross-validation, learning curves, objectives, and each `compare` variant validated
as a recipe of its own; the `tune` section's search space through search_space.py. Every error names the
key path and fits on one line.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Literal

from hf_transfer.errors import RecipeError
from hf_transfer.folder import OWN_FOLDERS
from hf_transfer.recipe import variants
from hf_transfer.recipe.schema import (
    CurveConfig, CVConfig, DataConfig, DistillConfig, DomainConfig, HubConfig, ModelConfig, RankConfig, Recipe,
    TaskConfig,
)
from hf_transfer.recipe.training import check_early_stopping, check_training
from hf_transfer.recipe.typed import build, check_range, check_value, plain
from hf_transfer.recipe.yaml import apply_override, dump_yaml, parse_override, read_recipe_file
from hf_transfer.search_space import build_tune
from hf_transfer.strategies import STRATEGIES
from hf_transfer.tasks import DEFAULT_TASKS, TASKS, multitask
from hf_transfer.tasks.base import arguments_class

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# every task's own section: name -> the modalities whose tasks read it
TASK_SECTIONS: dict[str, set[str]] = {}
for _task in TASKS.values():
    if _task.section:
        TASK_SECTIONS.setdefault(_task.section, set()).add(_task.modality)


def _build_finetune(data: Any) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"finetune: expected a mapping, got {data!r}")
    strategy = data.get("strategy", "full")
    if strategy not in STRATEGIES:
        raise RecipeError(
            f"finetune.strategy: unknown strategy {strategy!r} "
            f"(choose from {', '.join(STRATEGIES)})"
        )
    cls = STRATEGIES[strategy].options
    allowed = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in allowed:
            raise RecipeError(
                f"finetune.{key}: not an option of strategy {strategy!r} "
                f"(its options: {', '.join(sorted(allowed))})"
            )
    return build(cls, data, "finetune")


def _task(raw: dict[str, Any], model: ModelConfig):
    """The recipe's task record: `task`, else the default of `model.modality`; sets the model's modality."""
    name = check_value(raw.get("task"), str | None, "task")
    explicit = isinstance(raw["model"], dict) and "modality" in raw["model"]
    if name is None:
        if model.modality not in DEFAULT_TASKS:
            raise RecipeError(
                f"model.modality: unknown modality {model.modality!r} (choose from {', '.join(DEFAULT_TASKS)})"
            )
        name = DEFAULT_TASKS[model.modality]
    if name not in TASKS:
        raise RecipeError(f"task: unknown task {name!r} (choose from {', '.join(TASKS)})")
    task = TASKS[name]
    if explicit and model.modality != task.modality:
        raise RecipeError(f"model.modality: task {name} needs modality {task.modality!r}, got {model.modality!r}")
    model.modality = task.modality
    return task


def _task_sections(raw: dict[str, Any], task) -> dict[str, Any]:
    """The task's own section, built from its record's options; other tasks' sections are refused."""
    for name, modalities in TASK_SECTIONS.items():
        if raw.get(name) is not None and name != task.section:  # a saved recipe may hold `vision: null`
            raise RecipeError(f"{name}: section only applies with model.modality: {' or '.join(sorted(modalities))}")
    if task.section is None or task.options is None:
        return {}
    return {task.section: build(task.options, raw.get(task.section), task.section)}


def _require_mapping(raw: Any, where: str = "recipe") -> None:
    """A recipe is a mapping of sections; anything else (a CSV given as the recipe, a list) is named by its type
    and its first characters, not printed whole."""
    if not isinstance(raw, dict):
        text = repr(raw)
        text = text if len(text) <= 60 else text[:60] + "..."
        raise RecipeError(f"{where}: expected a mapping of sections (model:, data:, ...), got {type(raw).__name__} "
                          f"{text}")


def validate(raw: Any) -> Recipe:
    _require_mapping(raw)
    allowed = [f.name for f in dataclasses.fields(Recipe) if f.name != "sections"] + list(TASK_SECTIONS)
    for key in raw:
        if key not in allowed:
            raise RecipeError(f"{key}: unknown section (allowed: {', '.join(allowed)})")
    for key in ("model", "data"):
        if key not in raw:
            raise RecipeError(f"{key}: required section is missing")
    model = build(ModelConfig, raw["model"], "model")
    task = _task(raw, model)
    sections = _task_sections(raw, task)
    data = build(DataConfig, raw["data"], "data")
    if data.problem_type not in task.problem_types:
        raise RecipeError(
            f"data.problem_type: {task.name} supports {', '.join(task.problem_types)}, got {data.problem_type!r}"
        )
    finetune = _build_finetune(raw.get("finetune"))
    training = check_training(raw.get("training"), arguments_class(task))
    recipe = Recipe(
        model=model,
        data=data,
        task=task.name,
        finetune=finetune,
        training=training,
        early_stopping_patience=check_early_stopping(raw, training),
        nan_policy=check_value(raw.get("nan_policy", "stop"), Literal["stop", "skip"], "nan_policy"),
        hub=_build_hub(raw.get("hub")),
        verify=check_value(raw.get("verify", True), bool, "verify"),
        compare=_check_compare(raw, task),
        seeds=_check_seeds(raw.get("seeds")),
        **_build_objectives(raw, finetune, task),
        tasks=None if raw.get("tasks") is None else check_value(raw["tasks"], list[TaskConfig], "tasks"),
        cv=None if raw.get("cv") is None else build(CVConfig, raw["cv"], "cv"),
        curve=None if raw.get("curve") is None else build(CurveConfig, raw["curve"], "curve"),
        rank=None if raw.get("rank") is None else build(RankConfig, raw["rank"], "rank"),
        tune=build_tune(raw, validate),
        sections=sections,
    )
    _check_multitask(recipe)
    _check_metric(recipe, task)
    _check_cv(recipe)
    _check_streaming(recipe, task)
    _check_seeds_with(recipe)
    _check_curve(recipe)
    return recipe


def _build_objectives(raw: dict[str, Any], finetune, task) -> dict[str, Any]:
    """The optional `distill` and `domain` sections (training objectives added to the task loss)."""
    sections = {"distill": DistillConfig, "domain": DomainConfig}
    out = {key: None if raw.get(key) is None else build(cls, raw[key], key) for key, cls in sections.items()}
    asked = [k for k in sections if out[k] is not None]
    asked += ["class_weights"] if (raw.get("data") or {}).get("class_weights") is not None else []
    for key in asked:
        if key not in task.objectives:
            where = "data.class_weights" if key == "class_weights" else key
            raise RecipeError(f"{where}: not available for task {task.name} (yet)")
    problem = (raw.get("data") or {}).get("problem_type", "single_label_classification")
    if out["distill"] is not None and problem != "single_label_classification":
        raise RecipeError(f"distill: needs data.problem_type single_label_classification, got {problem!r}")
    adapting = out["domain"] is not None and out["domain"].method != "none"  # none: the source-only control
    if adapting and STRATEGIES[finetune.strategy].head_only(finetune):
        raise RecipeError("domain: the backbone is frozen (finetune.freeze: backbone), so its features cannot adapt")
    if any(out.values()) and getattr(finetune, "cache_features", None):
        raise RecipeError("finetune.cache_features: not available with distill or domain (they need the backbone's forward)")
    return out


def _build_hub(data: Any) -> HubConfig:
    hub = build(HubConfig, data, "hub")
    if hub.push and not hub.repo_id:
        raise RecipeError("hub.repo_id: required when hub.push is true")
    return hub


def _check_compare(raw: dict[str, Any], task) -> Any:
    """Every comparison run validated as a recipe of its own (errors name the run)."""
    value = check_value(raw.get("compare"), typing.get_type_hints(Recipe)["compare"], "compare")
    if not value:
        return value
    for name, overrides in variants.entries(value, task.baselines):
        if name in task.baselines:
            continue
        try:
            validate(variants.variant_raw(raw, name, overrides))
        except RecipeError as err:
            raise RecipeError(f"compare.{name}: {err}") from None
    return value


def _check_seeds(value: Any) -> list[int] | None:
    """`seeds`: a non-empty list of distinct integers in numpy's seed range."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise RecipeError(f"seeds: expected a list of distinct non-negative integers, got {value!r}")
    if not value:
        raise RecipeError("seeds: list at least one seed")
    for i, seed in enumerate(value):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise RecipeError(f"seeds[{i}]: expected a non-negative integer, got {seed!r}")
        check_range(seed, f"seeds[{i}]", low=0, high=2**32 - 1)
    twice = [seed for i, seed in enumerate(value) if seed in value[:i]]
    if twice:
        raise RecipeError(f"seeds: {twice[0]} listed twice")
    return value


def _check_seeds_with(recipe: Recipe) -> None:
    """`seeds` against the sections that cannot run once per seed."""
    if recipe.seeds is not None:
        _not_available_with("seeds", (("cv", recipe.cv, "set training.seed per cross-validation instead"),
                                      ("tasks", recipe.tasks, "set training.seed per run instead"),
                                      ("hub.push", recipe.hub.push, "push one seed's folder with hf-transfer push")))


def _not_available_with(section: str, others) -> None:
    """Refuse `section` beside any (key, value, hint) of `others` whose value is set."""
    for key, value, hint in others:
        if value:
            raise RecipeError(f"{section}: not available with {key} ({hint})")


def _check_curve(recipe: Recipe) -> None:
    """`curve` against the sections that split or share out the training data otherwise."""
    if recipe.curve is not None:
        _not_available_with("curve", (("cv", recipe.cv, "both cut the training split"),
                                      ("tasks", recipe.tasks, "one task per recipe"),
                                      ("hub.push", recipe.hub.push, "push one point's folder with hf-transfer push")))


def _check_multitask(recipe: Recipe) -> None:
    """Rules of `tasks:` against the rest of the recipe (the schema already checked each entry's types)."""
    if recipe.tasks is None:
        return
    tasks = recipe.tasks
    if not tasks:
        raise RecipeError("tasks: list at least one task")
    task = TASKS[recipe.task]
    if not task.multitask:
        allowed = ", ".join(name for name, t in TASKS.items() if t.multitask)
        raise RecipeError(f"tasks: multi-task runs on task {allowed}, not {recipe.task!r}")
    if STRATEGIES[recipe.finetune.strategy].peft:  # PEFT wraps one model with one head
        allowed = [name for name, s in STRATEGIES.items() if not s.peft]
        raise RecipeError(f"tasks: multi-task runs with finetune.strategy {', '.join(allowed)}, "
                          f"not {recipe.finetune.strategy!r}")
    if recipe.hub.push:
        raise RecipeError("tasks: not available with hub.push: push each task's folder after training with "
                          "hf-transfer push OUTPUT_DIR/TASK REPO_ID")
    for key, value in (("compare", recipe.compare), ("distill", recipe.distill),
                       ("domain", recipe.domain), ("data.class_weights", recipe.data.class_weights)):
        if value:
            raise RecipeError(f"tasks: not available with {key} (yet)")
    for key in ("mixup_alpha", "cutmix_alpha"):  # soft labels of one task
        if getattr(recipe.options, key, 0):
            raise RecipeError(f"{task.section}.{key}: not available with tasks (mixup mixes one task's labels)")
    defaults = {"label_column": "label", "problem_type": "single_label_classification", "label_names": None}
    for key, default in defaults.items():
        if getattr(recipe.data, key) != default:
            raise RecipeError(f"data.{key}: not used with tasks (each task sets its own {key})")
    seen = set()
    for i, t in enumerate(tasks):
        where = f"tasks[{i}]"
        if not _NAME.match(t.name) or t.name in seen:
            raise RecipeError(f"{where}.name: {t.name!r} must be unique, a letter then letters, digits or _")
        if t.name in OWN_FOLDERS:  # its folder would be the run's own: checkpoints/ took the task's model
            raise RecipeError(f"{where}.name: {t.name!r} names a folder the run writes itself "
                              f"({', '.join(OWN_FOLDERS)}); choose another name")
        seen.add(t.name)
        if t.weight < 0:
            raise RecipeError(f"{where}.weight: must be >= 0, got {t.weight}")
        for key in ("min_count", "top_k"):
            if getattr(t, key) is not None and getattr(t, key) < 1:
                raise RecipeError(f"{where}.{key}: must be >= 1, got {getattr(t, key)}")
        if t.label_names and (t.min_count or t.top_k):
            raise RecipeError(f"{where}.label_names: give label_names or min_count / top_k, not both")
        if t.problem_type not in task.problem_types:
            raise RecipeError(f"{where}.problem_type: task {recipe.task} takes {', '.join(task.problem_types)}, "
                              f"not {t.problem_type!r}")
        if t.problem_type == "regression" and (t.label_names or t.min_count or t.top_k):
            raise RecipeError(f"{where}.problem_type: regression takes no label_names, min_count or top_k")
    if not any(t.weight > 0 for t in tasks):
        raise RecipeError("tasks: at least one task needs a weight above 0")
    _check_multitask_metric(recipe)


def _check_multitask_metric(recipe) -> None:
    name = recipe.training.get("metric_for_best_model")
    if name is None or name.removeprefix("eval_") == "loss":
        return
    if not any(name.removeprefix("eval_").startswith(f"{t.name}_") for t in recipe.tasks):
        examples = ", ".join(f"{t.name}_{multitask.default_metric(t)}" for t in recipe.tasks)
        raise RecipeError(f"training.metric_for_best_model: {name!r} names no task's metric (e.g. {examples})")


def _check_metric(recipe: Recipe, task) -> None:
    """A single task's metric_for_best_model names a metric the task reports (its record's metric_names) or the
    loss: Trainer looks it up at the first evaluation, after an epoch of training, and stops there."""
    name = recipe.training.get("metric_for_best_model")
    if recipe.tasks is not None or name is None:
        return
    key = name.removeprefix("eval_")
    if key == "loss" or key in task.metric_names:  # the table's own names and derived ones (an entity type's _f1)
        return
    raise RecipeError(f"training.metric_for_best_model: {name!r} is not a metric of task {task.name} (its metrics: "
                      f"{', '.join(task.metric_names)}, or loss)")


def _check_cv(recipe: Recipe) -> None:
    cv = recipe.cv
    if cv is None:
        return
    if cv.folds < 2:
        raise RecipeError(f"cv.folds: must be at least 2, got {cv.folds}")
    if cv.fold is not None and not 0 <= cv.fold < cv.folds:
        raise RecipeError(f"cv.fold: must be between 0 and {cv.folds - 1}, got {cv.fold}")
    if recipe.compare:
        raise RecipeError("cv: not available with compare (run the comparison per fold by hand)")
    if recipe.hub.push:
        raise RecipeError("cv: not available with hub.push (push a fold's folder with hf-transfer push)")


def _check_streaming(recipe: Recipe, task) -> None:
    """data.streaming: a task that reads streams, a step count, and nothing that needs the whole training split."""
    if not recipe.data.streaming:
        return
    if not task.streams:
        tasks = ", ".join(t.name for t in TASKS.values() if t.streams)
        raise RecipeError(f"data.streaming: supported for {tasks}, not {task.name}")
    if recipe.training.get("max_steps", -1) == -1:
        raise RecipeError("training.max_steps: required with data.streaming (a stream has no length, so no epochs)")
    whole_split = {  # key -> set in the recipe; each reads or counts the whole training split
        "data.class_weights: auto": recipe.data.class_weights == "auto",
        "finetune.cache_features": getattr(recipe.finetune, "cache_features", None) is True,
        "tasks": bool(recipe.tasks), "compare": bool(recipe.compare), "cv": recipe.cv is not None,
        "curve": recipe.curve is not None,
        "rank": recipe.rank is not None, "distill": recipe.distill is not None, "domain": recipe.domain is not None,
    }
    for key, used in whole_split.items():
        if used:
            raise RecipeError(f"{key.split(':')[0]}: not available with data.streaming (it needs the whole "
                              "training split; set data.streaming: false)")


# --------------------------------------------------------------------------- loading


def load_recipe(
    source: str | Path | dict[str, Any] | Recipe,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Recipe:
    """Load a recipe from a YAML path, a dict or a Recipe, apply overrides, validate."""
    if isinstance(source, Recipe):
        source = source.to_dict()
    if isinstance(source, (str, Path)):
        raw = read_recipe_file(source)
    else:
        raw = plain(copy.deepcopy(source))  # numpy numbers, paths and tuples as a YAML file gives them
    if isinstance(overrides, dict):
        pairs = [(key, plain(value)) for key, value in overrides.items()]
    else:
        pairs = [parse_override(o) for o in overrides or []]
    _require_mapping(raw, str(source) if isinstance(source, (str, Path)) else "recipe")
    for key, value in pairs:
        apply_override(raw, key, value)
    return validate(raw)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, with secret-looking values (tokens) redacted."""
    return dump_yaml(recipe.to_dict())
