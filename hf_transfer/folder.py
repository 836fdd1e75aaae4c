"""The run folder: what a finished hf-transfer run leaves on disk, and the one place that writes it.

    <output_dir>/
      model files          (config.json, model.safetensors or adapter_model.safetensors, processor files)
      recipe.yaml          the resolved recipe (secrets redacted)
      predictions.npz      each evaluated split's per-example predictions and labels (the report's bootstrap)
      metrics.json         written LAST: a folder without it is not a finished run
      report.html          the run's page, read from the finished folder (with the card, README.md)
      checkpoints/         Trainer's checkpoints (checkpoint-<step>/, trainer_state.json written last)

Everything that reads or writes these names goes through this module. Nothing finished is lost:

- `--overwrite` writes the new run into a hidden sibling (`.<name>.new`) and puts it in place of the
  old folder only once it is complete (`put_in_place`); a failure before that leaves the old run as it was.
- `--resume` continues only a folder that is a run of ours, and keeps its metrics.json until the
  new model is about to be written.
- A lock file beside the folder (`.<name>.lock`, holding the process id) refuses a second run into
  the same folder; the lock of a process that no longer exists is taken over.
- A run made of runs (cv folds, seeds, learning-curve points) is staged as a whole (`staged`): with
  --overwrite its parts are all written beside the old run, which is replaced only when every one is
  complete.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hf_transfer.distributed import main_decides
from hf_transfer.errors import OutputError
from hf_transfer.recipe.yaml import dump_yaml, parse_yaml

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
COMPARE = "compare"  # compare/<name>/: the recipe's `compare` runs
MERGED = "merged"  # the merged model of a PEFT run (finetune.merge, `hf-transfer merge`)
ONNX = "onnx"  # `hf-transfer export`'s default destination
OWN_FOLDERS = (CHECKPOINTS, COMPARE, MERGED, ONNX)  # a multi-task run's task folders take other names
COMPLETE_MARKER = "metrics.json"  # written last: a folder without it is not a finished run
RECIPE = "recipe.yaml"
REPORT_HTML = "report.html"  # the run's page (outputs/html.py), written after metrics.json
PREDICTIONS = "predictions.npz"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def default_output_dir(model_name: str, strategy: str) -> str:
    name = Path(model_name.rstrip("/")).name
    return f"outputs/{name}-{strategy}"


def has_files(out: Path) -> bool:
    """Whether the folder holds any file (a failed start may leave empty folders only)."""
    return out.is_dir() and any(p.is_file() or p.is_symlink() for p in out.rglob("*"))


def is_run_folder(out: Path) -> bool:
    """A folder an hf-transfer run wrote: its recipe, its metrics or its checkpoints; or the folder of
    a cross-validation, of several seeds or of a learning curve (its summary, or fold / seed / fraction
    folders that are runs)."""
    if any((out / name).exists() for name in (RECIPE, COMPLETE_MARKER, CHECKPOINTS, "cv.json", "curve.json")):
        return True
    return any(is_run_folder(sub) for pattern in ("fold-*", "seed-*", "fraction-*") for sub in out.glob(pattern)
               if sub.is_dir())


def staging_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.new")


def check_output_dir(out: Path, overwrite: bool, resume: bool) -> Path:
    """The folder this run writes into: `out`, or (replacing a run: --overwrite) its staging sibling.
    Refuses a non-empty folder unless told what to do with it; never deletes a finished run here."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"training.output_dir: {out} exists and is not a folder")
    if not has_files(out):
        return out
    if resume:
        if not is_run_folder(out):
            raise OutputError(
                f"training.output_dir: {out} is not an hf-transfer run (no {RECIPE}, {COMPLETE_MARKER} or "
                f"{CHECKPOINTS}/); --resume continues only a run of ours"
            )
        return out
    if not overwrite:
        raise OutputError(
            f"training.output_dir: {out} is not empty; pass --overwrite to replace it "
            "or --resume to continue from its last checkpoint"
        )
    if not is_run_folder(out):
        raise OutputError(
            f"training.output_dir: {out} holds files but no hf-transfer run (no {RECIPE}, {COMPLETE_MARKER} or "
            f"{CHECKPOINTS}/); --overwrite replaces only a run: choose a new or empty folder"
        )
    staging = staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)  # a replacement that did not finish earlier
    return staging


def check_destination(target: Path, source: Path, replace: bool, replaceable, what: str, flag: str,
                      error=OutputError) -> None:
    """`target` may take what is written from `source` (merge, export): a new or empty folder or, with `replace`
    (the command's `flag`), one that `replaceable(target)` recognises as `what`. Never `source` itself or a folder
    around it: replacing it would delete what it reads."""
    if not target.exists():
        return
    here, read = target.resolve(), source.resolve()
    if here == read or here in read.parents:
        where = "the folder" if here == read else "a folder that holds"
        raise error(f"{target} is {where} {source}, which it reads; choose another destination")
    if target.is_dir() and not has_files(target):
        return
    if not replace:
        raise error(f"{target} exists; pass {flag} to replace it")
    if not target.is_dir() or not replaceable(target):
        raise error(f"{target} is not {what}; {flag} replaces only {what}: choose a new or empty folder")


def put_in_place(written: Path, out: Path) -> None:
    """A complete run written into `written` (the staging sibling) takes the place of `out`."""
    if written == out:
        return
    relocate(written, out)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    replaced = out.exists()
    if replaced:
        os.replace(out, old)
    os.replace(written, out)
    shutil.rmtree(old, ignore_errors=True)
    if replaced:
        log.info("replaced %s with the new run", out)


def relocate(written: Path, out: Path) -> None:
    """Paths into `written` that its JSON files and recipes record (a fold's or seed's output_dir, a report's
    predictions, a checkpoint's best_model_checkpoint) are rewritten to say `out`, where it is about to go."""
    before, after = str(written), str(out)

    def moved(value: Any) -> Any:
        if isinstance(value, str) and (value == before or value.startswith(before + os.sep)):
            return after + value[len(before):]
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        return value

    needles = {before.encode(), json.dumps(before)[1:-1].encode()}  # as written, and JSON-escaped
    for path in sorted(written.rglob("*")):
        if not (path.is_file() and (path.suffix == ".json" or path.name == RECIPE)):
            continue
        raw = path.read_bytes()
        if not any(needle in raw for needle in needles):
            continue
        is_json = path.suffix == ".json"
        data = json.loads(raw) if is_json else parse_yaml(raw.decode("utf-8"), str(path))
        if (changed := moved(data)) != data:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(changed, indent=2) + "\n" if is_json else dump_yaml(changed), encoding="utf-8")
            os.replace(tmp, path)


@contextmanager
def staged(out: Path, overwrite: bool, resume: bool, args) -> Iterator[Path]:
    """The folder a run made of runs (cv folds, seeds) writes into, with `out` locked meanwhile.

    The main process takes the lock and checks the folder (check_output_dir); every process follows its
    answer (distributed.main_decides). Replacing a run (--overwrite), the block writes into the staging
    sibling, which takes out's place only when the block completes: a failure in any part leaves the
    previous run byte-identical (and the partial new one is removed)."""
    with ExitStack() as held:
        def take_folder() -> Path:
            held.enter_context(run_lock(out))
            return check_output_dir(out, overwrite, resume)

        target = main_decides(take_folder, args)
        try:
            yield target
        except BaseException:
            if target != out and args.process_index == 0:
                shutil.rmtree(target, ignore_errors=True)
            raise
        with args.main_process_first(local=False, desc="output folder"):  # in place before anyone goes on
            if args.process_index == 0:
                put_in_place(target, out)


def write_error(out: Path, err: OSError) -> OutputError:
    """One line for a folder that cannot be written (permission, read-only file system, disk full)."""
    where = getattr(err, "filename", None) or out
    return OutputError(f"training.output_dir: cannot write {where}: {err.strerror or err.__class__.__name__}")


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


def _owner_alive(text: str) -> bool:
    """Whether the process named in a lock file (`pid host`) still runs (a lock from another host: assumed alive)."""
    try:
        pid, host = text.split()[:2]
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold the folder's lock while the run writes (taken by the main process of a launched run only)."""
    path = lock_path(out)
    mine = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = path.read_text(encoding="utf-8")
            except OSError:
                owner = ""
            if _owner_alive(owner):
                raise OutputError(
                    f"training.output_dir: {out} is in use by another run (process {owner.split()[0] if owner else '?'}, "
                    f"lock {path}); wait for it to finish, or delete the lock if that process is gone"
                ) from None
            log.warning("taking over the lock of a run that is gone (%s)", path)
            path.unlink(missing_ok=True)
            continue
        except OSError as err:  # read-only, permission denied, disk full
            raise write_error(out, err) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(mine)
        break
    else:
        raise OutputError(f"training.output_dir: cannot take the lock {path}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def is_finished(out: Path) -> bool:
    return (Path(out) / COMPLETE_MARKER).is_file()


def mark_unfinished(out: Path) -> None:
    """Before the final model is written over a finished run (--resume): from here until the new
    metrics.json, the folder is unfinished."""
    (out / COMPLETE_MARKER).unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_predictions(out: Path, evaluated: dict[str, tuple[Any, Any]]) -> None:
    """predictions.npz: {split: (predictions, label ids)} as arrays `<split>.predictions` and
    `<split>.label_ids` (`<split>.predictions.<i>` for each element of a tuple); splits without labels are
    left out."""
    arrays: dict[str, np.ndarray] = {}
    for split, (predictions, label_ids) in evaluated.items():
        if label_ids is None:
            continue
        for what, value in (("predictions", predictions), ("label_ids", label_ids)):
            if isinstance(value, (tuple, list)):
                arrays |= {f"{split}.{what}.{i}": np.asarray(v) for i, v in enumerate(value)}
            else:
                arrays[f"{split}.{what}"] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = out / f"{PREDICTIONS}.tmp"
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, out / PREDICTIONS)


def read_predictions(path: Path) -> dict[str, tuple[Any, Any]]:
    """{split: (predictions, label ids)} of a predictions.npz (tuples where the run's were); {} without one."""
    if not Path(path).is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}

    def value(split: str, what: str):
        key = f"{split}.{what}"
        if key in arrays:
            return arrays[key]
        return tuple(arrays[f"{key}.{i}"] for i in range(sum(k.startswith(key + ".") for k in arrays)))

    splits = sorted({k.split(".")[0] for k in arrays})
    return {split: (value(split, "predictions"), value(split, "label_ids")) for split in splits}


def finish(out: Path, recipe_yaml: str, metrics: dict[str, Any]) -> None:
    """The last writes of a run: its recipe, then metrics.json (which marks the folder finished)."""
    (out / RECIPE).write_text(recipe_yaml, encoding="utf-8")
    write_json_atomic(out / COMPLETE_MARKER, metrics)


def require_finished(out: Path, error: type[Exception] = OutputError, why: str = "") -> None:
    """`error` naming the folder unless it holds a finished run (`why` is appended to the message)."""
    if not is_finished(out):
        raise error(f"{out}: no metrics.json; not a finished hf-transfer run{why}")


def not_a_model(out: Path) -> str | None:
    """Why `out` is no model folder, naming what it is instead: missing, a file, a tune or rank report, or the
    root of runs (cv folds, seeds, learning-curve points, a multi-task run's task folders, checkpoints) whose
    models lie in its sub-folders, which it names. None where it may be one (the loader says what is missing)."""
    out = Path(out)
    if not out.exists():
        return f"{out}: no such folder"
    if not out.is_dir():
        return f"{out} is a file, not a run folder"
    if (out / "config.json").is_file() or (out / "adapter_config.json").is_file():
        return None
    if (out / "tune.json").is_file():
        return (f"{out} is a tune run: it keeps the best trial's recipe, not a model; train it with "
                f"hf-transfer finetune {out / 'best.yaml'}")
    if (out / "rank.json").is_file():
        return f"{out} is a rank report: it holds no model; fine-tune the best candidate it names"
    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]  # noqa: E731
    inner = [p for p in sorted(out.iterdir(), key=natural) if p.is_dir()
             and ((p / "config.json").is_file() or (p / "adapter_config.json").is_file() or is_finished(p))]
    if not inner:
        return None
    more = f" and {len(inner) - 3} more" if len(inner) > 3 else ""
    return f"{out} holds no model itself; its sub-folders do: {', '.join(str(p) for p in inner[:3])}{more}"


def require_model_run(out: Path, error: type[Exception] = OutputError, why: str = "") -> None:
    """`error` unless `out` is a finished run with a model of its own: a cv, seeds, curve or multi-task root is
    named as such, with the sub-folders that hold the models."""
    hint = not_a_model(out)
    if hint:
        raise error(hint)
    require_finished(out, error, why)


def read_metrics(out: Path, error: type[Exception] = OutputError) -> dict[str, Any]:
    """metrics.json of a finished run (`error` naming the folder otherwise)."""
    require_finished(out, error)
    path = Path(out) / COMPLETE_MARKER
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable ({err.__class__.__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(metrics, dict):
        raise error(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    return metrics


def is_complete_checkpoint(folder: Path) -> bool:
    """Trainer writes trainer_state.json last: without a readable one, the save was cut short."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()
    )
    for step, path in reversed(found):
        if is_complete_checkpoint(path):
            return str(path)
        log.warning("ignoring incomplete checkpoint %s (its save was interrupted)", path)
    return None
