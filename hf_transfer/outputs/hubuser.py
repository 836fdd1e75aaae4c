"""Load and run a saved folder the way a Hugging Face user would: transformers (and peft) only.

This module never imports hf_transfer. `hf-transfer verify` runs its source in a separate
Python process (`python -c`, with `hf_transfer` blocked from import), so a folder that passes
needs nothing but transformers, peft and safetensors to load. `hf-transfer predict` imports
`load_pipeline` from here.

Full models load with `AutoModelFor<Task>` + `transformers.pipeline`; PEFT adapters with
`peft.AutoPeftModelForSequenceClassification` (text) or `peft.AutoPeftModel`, their labels read
from the folder's config.json. The task is given as a dict (from hf-transfer's task record):
`pipeline` (pipeline task), `auto` (Auto class name), `processor` (pipeline argument naming the
processor), `peft` (the adapter's PEFT task type, or None) and `mode`: `labels` (the pipeline's score
per label, one row per input), `words` (token classification: per-word logits of each word's first
sub-token, from the pipeline's model and tokenizer with `is_split_into_words=True`, NaN where a word has
no sub-token) or `texts` (speech recognition: the pipeline's transcript per input). `autos` lists the
task's Auto classes when it has several (CTC and sequence-to-sequence recognisers): the one matching the
saved architecture loads the folder.
"""


import json
import sys
from contextlib import nullcontext
from pathlib import Path


class FolderError(Exception):
    """The folder does not load as a Hub user expects; the message is one line."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FolderError(f"{path} is missing") from None
    except (OSError, ValueError) as err:
        raise FolderError(f"{path} is unreadable ({err.__class__.__name__})") from None


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def task_of(folder: str | Path, tasks: list[dict]) -> dict:
    """The entry of `tasks` whose Auto class loads the saved config's architecture (a folder without
    hf-transfer's recipe.yaml: its architecture is all there is to go by)."""
    config = read_json(Path(folder) / "config.json")
    archs = config.get("architectures") or []
    for arch in archs:  # the Auto class whose mapping lists it (Wav2Vec2ForSequenceClassification: audio)
        for task in tasks:
            if any(arch in _mapped(auto) for auto in _autos(task)):
                return task
    for arch in archs:  # a class transformers does not map (remote code): by the name's head
        for task in tasks:
            if any(arch.endswith(auto.removeprefix("AutoModel")) for auto in _autos(task)):
                return task
    if is_adapter(folder):  # adapters saved before the head class was recorded
        peft_task = read_json(Path(folder) / "adapter_config.json").get("task_type")
        for task in tasks:
            if peft_task and task["peft"] == peft_task:
                return task
    heads = ", ".join(t["auto"].removeprefix("AutoModel") for t in tasks)
    raise FolderError(
        f"{folder}/config.json: architectures {config.get('architectures')} name no head hf-transfer "
        f"trains ({heads}); was the model saved with its head?"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


def load_config(folder: Path):
    """The folder's transformers config. A timm folder from an older hf-transfer (timm's own config.json, which
    transformers reads as a TimmWrapperConfig) names `num_classes` in `model_args` too, which
    TimmWrapperForImageClassification would pass to timm twice: read without it."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001 - a corrupt or unknown config fails in many types
        raise FolderError(f"{folder}/config.json: AutoConfig.from_pretrained failed: {_first_line(err)}") from None
    model_args = getattr(config, "model_args", None)
    if isinstance(model_args, dict) and "num_classes" in model_args:
        config.model_args = {k: v for k, v in model_args.items() if k != "num_classes"} or None
    return config


def _mapped(auto: str) -> set[str]:
    """The model class names transformers' `auto` class (e.g. AutoModelForAudioClassification) loads."""
    import transformers

    mapping = getattr(getattr(getattr(transformers, auto, None), "_model_mapping", None), "_model_mapping", {})
    return {name for value in mapping.values() for name in ((value,) if isinstance(value, str) else value)}


def _autos(task: dict) -> list[str]:
    return task.get("autos") or [task["auto"]]


def auto_class_name(folder: Path, task: dict) -> str:
    """The task's Auto class that loads the saved architecture (e.g. CTC or sequence-to-sequence)."""
    autos = _autos(task)
    if len(autos) == 1:
        return autos[0]
    archs = read_json(Path(folder) / "config.json").get("architectures") or []
    return next((a for a in autos for arch in archs if arch.endswith(a.removeprefix("AutoModel"))), autos[0])


def load_full_model(folder: Path, task: dict):
    import transformers

    auto = getattr(transformers, auto_class_name(folder, task))
    config = load_config(folder)
    try:  # safetensors only: a folder that holds pickled weights alone is not unpickled here
        model, info = auto.from_pretrained(str(folder), config=config, output_loading_info=True, use_safetensors=True)
    except Exception as err:  # noqa: BLE001 - a corrupt or truncated file fails in many types
        raise FolderError(f"{folder}: {auto.__name__}.from_pretrained failed: {_first_line(err)}") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise FolderError(
            f"{folder}: weights missing from the saved model ({', '.join(missing[:4])}); "
            "a Hub user would get a randomly initialised head"
        )
    return model


# PEFT task type -> its AutoPeftModel class (the base model's head class is chosen by the task type)
PEFT_AUTO = {"SEQ_CLS": "AutoPeftModelForSequenceClassification", "TOKEN_CLS": "AutoPeftModelForTokenClassification"}


def _peft_auto(task: dict) -> str:
    return PEFT_AUTO.get(task["peft"], "AutoPeftModel")


def loader_name(folder: Path, task: dict) -> str:
    return f"peft.{_peft_auto(task)}" if is_adapter(folder) else "transformers.pipeline"


def load_adapter_model(folder: Path, task: dict):
    import peft
    from transformers import AutoConfig

    _check_head_saved(folder)
    _check_base_found(folder)
    config = AutoConfig.from_pretrained(str(folder))  # labels: saved beside the adapter
    auto = getattr(peft, _peft_auto(task))
    # the base model's own head (e.g. 1000 ImageNet classes) gives way to the adapter's saved one
    extra = {} if task["peft"] in PEFT_AUTO else {"ignore_mismatched_sizes": True}
    try:
        base = None if task["peft"] in PEFT_AUTO else read_json(Path(folder) / "adapter_config.json").get(
            "base_model_name_or_path")
        if base and _base_differs(base, config):
            model = _adapter_on_task_model(folder, base, task, config)
        else:
            model = auto.from_pretrained(
                str(folder), num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id, **extra
            )
    except Exception as err:  # noqa: BLE001 - a corrupt or truncated file fails in many types
        raise FolderError(f"{folder}: {auto.__name__}.from_pretrained failed: {_first_line(err)}") from None
    check_adapter_applied(model, folder)
    if (Path(folder) / "generation_config.json").is_file():  # generate as the run evaluated, not as the base does
        from transformers import GenerationConfig

        # on the wrapped model: PeftModel.generate calls it, and it generates from its own config (an
        # attribute set on the PeftModel would only shadow it)
        model.get_base_model().generation_config = GenerationConfig.from_pretrained(str(folder))
    return model


# config keys that change the shape of a base model's weights as hf-transfer saves it (a Whisper encoder
# shortened to the recipe's longest clip keeps the first rows of its sinusoidal position table)
SHAPE_KEYS = ("max_source_positions",)


def _base_differs(base: str, config) -> bool:
    """The adapter's base checkpoint is another architecture than the saved model (e.g. a wav2vec2 body
    under a CTC model: AutoPeftModel would rebuild the base's class, not the trained one), or another
    shape (a shortened Whisper input: the base would read 30 s where the run read its clips' length)."""
    from transformers import AutoConfig

    base_config = AutoConfig.from_pretrained(base)
    return base_config.architectures != config.architectures or any(
        getattr(base_config, key, None) != getattr(config, key, None) for key in SHAPE_KEYS
    )


def _adapter_on_task_model(folder: Path, base: str, task: dict, config):
    """The task's Auto class (the saved architecture) on the base weights and the saved config, then the
    adapter; weights whose shape the saved config changes are rebuilt (Whisper's positions: sinusoids, as saved)."""
    import transformers
    from peft import PeftModel

    auto = getattr(transformers, auto_class_name(folder, task))
    model = auto.from_pretrained(base, config=config, ignore_mismatched_sizes=True)
    return PeftModel.from_pretrained(model, str(folder))


def _check_base_found(folder: Path) -> None:
    """An adapter loads on its base model: a local folder that is gone (moved, deleted) is named, not reported
    as a malformed Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    base = read_json(Path(folder) / "adapter_config.json").get("base_model_name_or_path")
    if not base or Path(base).expanduser().exists():
        return
    try:
        validate_repo_id(base)
        return  # a Hub id: the Hub (or its cache) answers
    except HFValidationError:
        raise FolderError(f"{folder}: the adapter's base model {base} (base_model_name_or_path in "
                          "adapter_config.json) is not found; put it back, or set base_model_name_or_path to "
                          "its folder or Hub id") from None


def _check_head_saved(folder: Path) -> None:
    """Before loading: one of the adapter's modules_to_save (its head) is in the saved weights."""
    from safetensors import safe_open

    weights = Path(folder) / "adapter_model.safetensors"
    if not weights.is_file():
        raise FolderError(f"{weights} is missing")
    heads = list(dict.fromkeys(read_json(Path(folder) / "adapter_config.json").get("modules_to_save") or []))
    with safe_open(str(weights), "pt") as fh:
        keys = list(fh.keys())
    if heads and not any(f".{h}." in f".{k}" for h in heads for k in keys):
        raise FolderError(
            f"{weights}: no head ({' or '.join(heads)}, the adapter's modules_to_save) was saved; "
            "a Hub user would get a randomly initialised head"
        )


def check_adapter_applied(model, folder: Path) -> None:
    """The saved LoRA weights and head (modules_to_save) are all in the loaded model, unchanged."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    if not isinstance(model, PeftModel):
        raise FolderError(f"{folder}: the loaded model is a {type(model).__name__}, not a PeftModel")
    weights = Path(folder) / "adapter_model.safetensors"
    if not weights.is_file():
        raise FolderError(f"{weights} is missing")
    saved = load_file(str(weights))
    method, prefix = adapter_prefix(folder)
    if not any(prefix in k for k in saved):
        raise FolderError(f"{weights}: holds no {method} weights (no parameter named {prefix}*)")
    heads = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "ModulesToSaveWrapper"}
    listed = read_json(Path(folder) / "adapter_config.json").get("modules_to_save")
    if not heads and (listed or model.peft_config["default"].task_type in PEFT_AUTO):
        raise FolderError(f"{folder}: the loaded adapter trains no head (modules_to_save is empty)")
    for head in sorted(heads):  # modules_to_save present in this model (PEFT lists classifier and score)
        if not any(f".{head}." in f".{k}" for k in saved):
            raise FolderError(
                f"{weights}: the head {head!r} (modules_to_save) was not saved; "
                "a Hub user would get a randomly initialised head"
            )
    loaded = get_peft_model_state_dict(model)
    differ = [k for k, v in saved.items() if k not in loaded or not torch.equal(v, loaded[k].cpu())]
    if differ:
        raise FolderError(f"{folder}: the adapter is not applied on reload ({', '.join(differ[:3])} differ)")


def adapter_prefix(folder: Path) -> tuple[str, str]:
    """(PEFT method, the prefix of its parameter names) from adapter_config.json and PEFT's own table."""
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    method = read_json(Path(folder) / "adapter_config.json").get("peft_type")
    try:
        return method, PEFT_TYPE_TO_PREFIX_MAPPING[PeftType(method)]
    except (KeyError, ValueError):
        raise FolderError(f"{folder}/adapter_config.json: unknown peft_type {method!r}") from None


def check_labels(model, folder: Path, expected: list[str] | None) -> None:
    """config.json carries the run's label names as id2label (not LABEL_0, LABEL_1, ...)."""
    id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
    names = [id2label.get(i) for i in range(len(id2label))]
    if expected is not None and names != list(expected):
        raise FolderError(
            f"{folder}/config.json: id2label is {names}, expected the run's labels {list(expected)}"
        )
    if len(set(names)) != len(names):
        raise FolderError(f"{folder}/config.json: id2label repeats labels: {names}")


def load_pipeline(folder: str | Path, task: dict, device: str | None = None,
                  expected_labels: list[str] | None = None):
    """A ready `transformers.pipeline` for the folder (full model or adapter), after the checks."""
    from transformers import pipeline

    folder = Path(folder)
    device = check_device(device)
    if not (folder / "config.json").is_file():
        raise FolderError(f"{folder}: no config.json; not a saved model folder")
    model = load_adapter_model(folder, task) if is_adapter(folder) else load_full_model(folder, task)
    check_labels(model, folder, expected_labels)
    processors = {arg: load_processor(folder, {**task, "processor": arg}) for arg in task.get("processors") or [task["processor"]]}
    return pipeline(task["pipeline"], model=model, device=device, **processors)


def processor_class(task: dict) -> str:
    """The Auto class of the task's processor: tokenizer -> AutoTokenizer, image_processor -> AutoImageProcessor..."""
    return "Auto" + "".join(word.title() for word in task["processor"].split("_"))


def load_processor(folder: Path, task: dict):
    """The folder's processor, loaded here: pipeline() cannot resolve a feature extractor by path when the
    model is given as an object (transformers 5 looks for a CTC decoder under the name None)."""
    import transformers

    auto = getattr(transformers, processor_class(task))
    try:
        return auto.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001 - a corrupt or truncated file fails in many types
        raise FolderError(f"{folder}: {auto.__name__}.from_pretrained failed: {_first_line(err)}") from None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_device(device) -> str:
    """The device to run on: `device` when this machine has it (default: cuda when present, else cpu)."""
    import torch

    if device is None or device == "":
        return "cuda" if _cuda() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise FolderError(f"device {device!r} is not a device name (e.g. cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "meta":  # shapes without data: nothing can be computed there
        raise FolderError(f"device {device!r} holds no data; use cpu or an accelerator")
    try:
        torch.empty(0, device=parsed)
    except Exception as err:  # noqa: BLE001 - RuntimeError, AssertionError (torch built without CUDA)
        raise FolderError(f"device {device!r} is not available here ({_first_line(err)})") from None
    return device


def each(pipe, inputs: list, bar=None, **call_kwargs) -> list:
    """The pipeline's answer for every input, in order. With a progress bar (a tqdm), the inputs go in as a
    generator and the answers are counted as they come: the same batches (consecutive `batch_size` inputs,
    each padded to its longest) as a list makes. A batch never asks for more slots than there are inputs
    (torch's batch sampler would make room for `batch_size` of them)."""
    if call_kwargs.get("batch_size") and hasattr(inputs, "__len__"):
        call_kwargs["batch_size"] = max(1, min(call_kwargs["batch_size"], len(inputs)))
    if bar is None:
        return pipe(inputs, **call_kwargs)
    rows = []
    for row in pipe((x for x in inputs), **call_kwargs):
        rows.append(row)
        bar.update()
    return rows


def logits(pipe, inputs: list, batch_size: int, bar=None, **call_kwargs):
    """Raw model outputs (float32, one row per input, columns in label-id order) through the pipeline."""
    import numpy as np

    index = {label: int(i) for i, label in pipe.model.config.id2label.items()}
    # every label's score: top_k=None means "the default 5" to the image-classification pipeline
    rows = each(pipe, inputs, bar, batch_size=batch_size, top_k=len(index), function_to_apply="none", **call_kwargs)
    out = np.full((len(inputs), len(index)), np.nan, dtype=np.float32)
    for r, row in enumerate(rows):
        for item in row if isinstance(row, list) else [row]:
            out[r, index[item["label"]]] = item["score"]
    if np.isnan(out).any():
        raise FolderError(f"the {pipe.task} pipeline scored {int((~np.isnan(out[0])).sum())} of {len(index)} labels; "
                          "the metrics need them all")
    return out


def word_logits(pipe, inputs: list, batch_size: int, bar=None, **tokenizer_kwargs):
    """Per-word logits (float32, [inputs, most words, labels]): each word's first sub-token, batched as the
    Trainer evaluates (each batch padded to its longest input); NaN for padding and words with no sub-token."""
    import numpy as np
    import torch

    model, tokenizer = pipe.model, pipe.tokenizer
    width = max((len(words) for words in inputs), default=0)
    out = np.full((len(inputs), width, len(model.config.id2label)), np.nan, dtype=np.float32)
    model.eval()
    for start in range(0, len(inputs), batch_size):
        batch = [list(words) for words in inputs[start:start + batch_size]]
        enc = tokenizer(batch, is_split_into_words=True, padding=True, return_tensors="pt", **tokenizer_kwargs)
        with torch.no_grad():
            logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits.float().cpu().numpy()
        for i in range(len(batch)):
            seen = set()
            for t, w in enumerate(enc.word_ids(i)):
                if w is not None and w not in seen:
                    seen.add(w)
                    out[start + i, w] = logits[i, t]
        if bar is not None:
            bar.update(len(batch))
    return out


def transcripts(pipe, inputs: list, batch_size: int, bar=None, **call_kwargs) -> list[str]:
    """The pipeline's text for every input (speech recognition), batched as the Trainer evaluates. The
    pipeline empties an input dict {raw, sampling_rate} as it reads it: it gets copies, so the inputs can
    be transcribed again."""
    inputs = [dict(x) if isinstance(x, dict) else x for x in inputs]
    return [row["text"] for row in each(pipe, inputs, bar, batch_size=batch_size, **call_kwargs)]


def as_input(value):
    """An audio value {raw, sampling_rate} comes back from the saved dataset as a list: an array again."""
    if isinstance(value, dict) and "raw" in value:
        import numpy as np

        return {"raw": np.asarray(value["raw"], dtype=np.float32), "sampling_rate": value["sampling_rate"]}
    return value


def progress_bar(spec: dict, total: int, desc: str):
    """A progress bar (tqdm) written to the file descriptor `spec["progress_fd"]`, which the caller copies to
    its own stderr; `spec["progress"]` holds the bar's options, None for no bar (then the context gives None)."""
    if not spec.get("progress"):
        return nullcontext()
    from transformers.utils.logging import tqdm

    stream = open(spec["progress_fd"], "w", encoding="utf-8", closefd=False)
    return tqdm(total=total, file=stream, **{**spec["progress"], "desc": desc})


def main(spec_path: str) -> int:
    """Reload spec["folder"], check it, and write the pipeline's logits per split as .npy files."""
    import datasets
    import numpy as np

    spec = read_json(Path(spec_path))
    folder = Path(spec["folder"])
    try:
        pipe = load_pipeline(folder, spec["task"], spec.get("device"), spec.get("expected_labels"))
        loader = loader_name(folder, spec["task"])
        for role, path in spec["splits"].items():
            inputs = [as_input(x) for x in datasets.load_from_disk(path)["inputs"]]
            mode = spec["task"].get("mode")
            with progress_bar(spec, len(inputs), f"verify {role}") as bar:
                if mode == "texts":
                    texts = transcripts(pipe, inputs, spec["batch_size"], bar, **spec["call_kwargs"])
                    (Path(spec["out"]) / f"{role}.json").write_text(json.dumps(texts), encoding="utf-8")
                    continue
                read = word_logits if mode == "words" else logits
                out = read(pipe, inputs, spec["batch_size"], bar, **spec["call_kwargs"])
            np.save(Path(spec["out"]) / f"{role}.npy", out)
    except FolderError as err:
        print(json.dumps({"ok": False, "error": str(err)}))
        return 1
    print(json.dumps({"ok": True, "loader": loader, "task": pipe.task}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
