"""Pushing a finished folder to the Hugging Face Hub (`hub.push`, `hf-transfer push`).

A failed push raises HubError but loses nothing: the folder is already saved, and
`hf-transfer push OUTPUT_DIR REPO_ID` retries it.

Pushing goes through huggingface_hub (`HfApi.create_repo` + `upload_folder`) from a staging copy
of the folder: Trainer checkpoints, `training_args.bin` (a pickle that may carry `hub_token`) and
temporary files stay behind (TensorBoard's event files under `runs/` go along: the Hub shows them as the
repo's training metrics), README.md is the card written for the repo, and an adapter's
`adapter_config.json` names the base model by its Hub id. The token comes from huggingface_hub
itself (HF_TOKEN or the login cache); it is never passed around, logged or written, and the upload
is refused if any staged file contains it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from hf_transfer.errors import HubError, RecipeError
from hf_transfer.folder import MERGED, PREDICTIONS
from hf_transfer.recipe.schema import check_repo_id
from hf_transfer.outputs.card import build_card, hub_base_model
from hf_transfer.outputs.multitask import read_run

log = logging.getLogger(__name__)

EXCLUDE = ("checkpoints", "training_args.bin", "*.tmp", PREDICTIONS)  # never uploaded (predictions: the test labels)
LOGIN_HINT = "set HF_TOKEN or run `hf auth login`"


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def preflight(recipe) -> None:
    """Before training: a push that cannot start should fail now, not after hours of training."""
    if recipe.hub.push and not _token():
        raise HubError(f"hub.push: no Hugging Face token found; {LOGIN_HINT}")


def _excluded(rel: Path, extra: tuple[str, ...]) -> bool:
    return any(rel.parts[0] == p or rel.match(p) for p in EXCLUDE + extra)


def _stage_files(src: Path, dest: Path, extra: tuple[str, ...] = ()) -> None:
    """Copy `src` into `dest` (hard links where possible), leaving out EXCLUDE and `extra`."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or _excluded(rel, extra):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


@contextmanager
def _staging(out: Path):
    tmp = Path(tempfile.mkdtemp(prefix=".push-", dir=out.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_new(path: Path, text: str) -> None:
    """Replace a staged file without touching its hard-linked original."""
    path.unlink(missing_ok=True)
    path.write_text(text, encoding="utf-8")


def _refuse_token(stage: Path, token: str) -> None:
    needle = token.encode()
    for path in stage.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            raise HubError(f"hub: {path.relative_to(stage)} contains your Hugging Face token; not uploading it")


def _upload(api, stage: Path, repo_id: str, private: bool, revision: str | None, what: str) -> str:
    url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, folder_path=str(stage), repo_type="model", revision=revision,
        commit_message=f"Upload {what} trained with hf-transfer",
    )
    return str(url)


def push(out_dir: str | Path, repo_id: str, private: bool = True, revision: str | None = None,
         base_model: str | None = None, merged_repo_id: str | None = None) -> list[str]:
    """Upload the finished run in `out_dir` to `repo_id` (and merged/ to `merged_repo_id`); return URLs."""
    from huggingface_hub import HfApi

    out = Path(out_dir)
    try:
        check_repo_id("push: repo_id", repo_id)
        check_repo_id("push: merged_repo_id", merged_repo_id)
    except RecipeError as err:
        raise HubError(str(err)) from None
    recipe, _ = read_run(out, HubError, ", nothing pushed")
    merged_repo_id = merged_repo_id or recipe.hub.merged_repo_id
    base = hub_base_model(recipe, base_model)
    adapter = (out / "adapter_config.json").is_file()
    if adapter and base is None:
        raise HubError(
            f"hub.base_model: the adapter's base model {recipe.model.name_or_path!r} is a local folder; "
            "name its Hub id (hub.base_model, or --base-model) so that users can load the adapter"
        )
    if merged_repo_id and not (out / MERGED).is_dir():
        raise HubError(f"hub.merged_repo_id: {out} has no merged/ folder (the run had finetune.merge: false)")
    token = _token()
    if not token:
        raise HubError(f"hub: no Hugging Face token found; {LOGIN_HINT}")
    api = HfApi()
    jobs = [(repo_id, out, (MERGED,) if merged_repo_id else (), False)]
    if merged_repo_id:
        jobs.append((merged_repo_id, out / MERGED, (), True))
    urls = []
    for target, src, extra, is_merged in jobs:
        with _staging(out) as stage:
            _stage_files(src, stage, extra)
            card = build_card(out, repo_id=target, base_model=base, merged_repo_id=merged_repo_id, merged=is_merged)
            _write_new(stage / "README.md", str(card))
            if adapter and not is_merged:
                cfg = json.loads((stage / "adapter_config.json").read_text(encoding="utf-8"))
                cfg["base_model_name_or_path"] = base
                _write_new(stage / "adapter_config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
            _refuse_token(stage, token)
            try:
                urls.append(_upload(api, stage, target, private, revision, "merged model" if is_merged else "model"))
            except Exception as err:  # network, auth, quota...: one line, folder intact
                text = (str(err).strip().splitlines() or [err.__class__.__name__])[0].replace(token, "***")
                raise HubError(
                    f"hub: push of {out} to {target} failed ({err.__class__.__name__}: {text}); the run is "
                    f"saved, retry with: hf-transfer push {out} {target}"
                ) from None
        log.info("pushed %s to %s", src, target)
    return urls
