"""`hf-transfer merge OUTPUT_DIR [DEST]`: a PEFT adapter folder merged into a plain model folder, afterwards.

What `finetune.merge: true` does at the end of training, for a run trained without it (or under ZeRO-3 /
FSDP, where no process holds the full weights to merge). The adapter loads as a Hub user loads it
(hubuser.load_adapter_model: its saved head and weights checked), `merge_and_unload()` folds the adapter
into the base weights, and the model (labels in its config) and the folder's processor are saved with
`save_pretrained` into DEST, by default `OUTPUT_DIR/merged` (where the card and `push` look for it). DEST
is written beside itself first and put in place when complete; an existing DEST is replaced only with
`force`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hf_transfer.errors import HfTransferError
from hf_transfer.folder import MERGED, check_destination, is_run_folder, not_a_model, put_in_place, staging_dir
from hf_transfer.outputs.hubuser import FolderError, is_adapter, load_adapter_model, load_processor
from hf_transfer.outputs.predict import task_of_folder
from hf_transfer.outputs.verify import hub_user_task


def merge(out_dir: str | Path, dest: str | Path | None = None, force: bool = False) -> Path:
    """Merge the adapter in `out_dir` into a plain model saved in `dest`; returns `dest`."""
    out = Path(out_dir)
    hint = not_a_model(out)
    if hint:
        raise HfTransferError(f"merge: {hint}")
    if not is_adapter(out):
        raise HfTransferError(f"merge: {out} holds no PEFT adapter (no adapter_config.json); nothing to merge")
    target = Path(dest) if dest is not None else out / MERGED
    check_destination(target, out, force, lambda t: (t / "config.json").is_file() and not is_run_folder(t),
                      "a merged model folder", "--force", lambda msg: HfTransferError(f"merge: {msg}"))
    try:
        hub_task = hub_user_task(task_of_folder(out)[0])
        model = load_adapter_model(out, hub_task).merge_and_unload()
        processor = load_processor(out, hub_task)
    except FolderError as err:
        raise HfTransferError(f"merge: {err}") from None
    staging = staging_dir(target)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(str(staging))
        processor.save_pretrained(str(staging))
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise HfTransferError(f"merge: cannot write {target}: {err.strerror or err.__class__.__name__}") from None
    put_in_place(staging, target)
    return target
