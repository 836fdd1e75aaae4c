"""Push and model card, without network: huggingface_hub is mocked at HfApi.create_repo/upload_folder."""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard

from hf_transfer import finetune
from hf_transfer.cli import COMMANDS, _parser, main
from hf_transfer.errors import HubError
from hf_transfer.outputs.hub import push
from tests.tiny import text_recipe

TOKEN = "hf_SENTINELtoken0123456789abcdefABCDEF"
BASE = "owner/tiny-bert"


class FakeHub:
    """Records what each HfApi call would have sent, reading the folder at call time."""

    def __init__(self, fail: Exception | None = None):
        self.calls, self.uploads, self.fail = [], [], fail

    def install(self, monkeypatch):
        monkeypatch.setattr(HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(HfApi, "create_branch", self.create_branch)
        monkeypatch.setattr(HfApi, "upload_folder", self.upload_folder)
        return self

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, **kw):
        if self.fail:
            raise self.fail
        root = Path(kw["folder_path"])
        files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        self.uploads.append({"repo_id": kw["repo_id"], "files": files, **kw})


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tiny_bert, sentiment_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    full = root / "full"
    finetune(text_recipe(tiny_bert, sentiment_files, full))
    (full / "report.md").write_text("| strategy | test accuracy |\n|---|---|\n| full | 0.5 |\n")
    lora = root / "lora"
    recipe = text_recipe(tiny_bert, sentiment_files, lora, strategy="lora", r=2, merge=True)
    recipe["hub"] = {"base_model": BASE}
    finetune(recipe)
    return {"full": full, "lora": lora}


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return TOKEN


def no_token(monkeypatch, where: Path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(where / "no-login" / "token"))  # no login cache


def card_of(upload) -> ModelCard:
    return ModelCard(upload["files"]["README.md"].decode())


def test_push_full_model_uploads_exactly_the_model_files(runs, token, monkeypatch, caplog, capsys):
    hub = FakeHub().install(monkeypatch)
    before = tree_digest(runs["full"])
    with caplog.at_level(logging.DEBUG):
        assert main(["push", str(runs["full"]), "me/tiny-full", "--revision", "v1"]) == 0
    [create, branch, upload] = hub.calls
    assert create[0] == "create_repo" and create[2]["private"] is True and create[2]["repo_type"] == "model"
    assert branch[0] == "create_branch" and branch[2]["branch"] == "v1"
    [sent] = hub.uploads
    assert sent["repo_id"] == "me/tiny-full" and sent["repo_type"] == "model" and sent["revision"] == "v1"
    assert set(sent["files"]) == {
        "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "recipe.yaml", "metrics.json", "report.md", "report.html",
    }  # no checkpoints/, no training_args.bin, no predictions.npz (the test labels); the card links to report.html
    for name, data in sent["files"].items():
        assert TOKEN.encode() not in data, name
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text
    assert "pushed: https://huggingface.co/me/tiny-full" in out.out
    assert tree_digest(runs["full"]) == before  # the local folder is untouched
    assert not list(runs["full"].parent.glob(".push-*"))  # staging removed


def test_card_metadata_parses_back_with_the_metrics(runs, token, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    push(runs["full"], "me/tiny-full", private=False)
    assert hub.calls[0][2]["private"] is False
    card = card_of(hub.uploads[0])
    metrics = json.loads((runs["full"] / "metrics.json").read_text())
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.base_model is None  # a local folder, no hub.base_model: not claimed as a Hub model
    assert "hf-transfer" in data.tags and "strategy-full" in data.tags
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in data.eval_results}
    assert results[("test", "Accuracy")] == metrics["test"]["test_accuracy"]
    assert results[("test", "F1 (macro)")] == metrics["test"]["test_f1_macro"]
    assert results[("train (validation carved)", "Accuracy")] == metrics["validation"]["eval_accuracy"]
    text = card.text
    assert "| 0 | negative |" in text and "| 1 | positive |" in text
    assert 'pipeline("text-classification", model="me/tiny-full")' in text
    assert "Trainable parameters: " in text and "(100.00%)" in text
    assert "## Transfer report" in text and "| full | 0.5 |" in text
    assert "## Intended use and limitations" in text
    assert f"{metrics['test']['test_accuracy']:.4f}" in text


def test_card_is_written_at_the_end_of_training(runs):
    card = ModelCard.load(runs["lora"] / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model == BASE
    assert card.data.eval_results and "AutoPeftModelForSequenceClassification" in card.text
    assert "Trainable parameters: " in card.text and "r=2" in card.text


def test_push_adapter_names_its_hub_base_model_and_keeps_merged(runs, token, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    push(runs["lora"], "me/tiny-lora")
    [sent] = hub.uploads
    files = sent["files"]
    assert {"adapter_model.safetensors", "adapter_config.json", "config.json", "README.md"} <= set(files)
    assert "merged/model.safetensors" in files and not any(f.startswith("checkpoints") for f in files)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == BASE
    local = json.loads((runs["lora"] / "adapter_config.json").read_text())
    assert local["base_model_name_or_path"] != BASE  # the local folder still names the local base
    card = card_of(sent)
    assert card.data.library_name == "peft" and card.data.base_model == BASE
    assert 'subfolder="merged"' in card.text


def test_push_merged_model_to_a_second_repo(runs, token, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    main(["push", str(runs["lora"]), "me/tiny-lora", "--merged-repo-id", "me/tiny-merged"])
    adapter, merged = hub.uploads
    assert not any(f.startswith("merged/") for f in adapter["files"])
    assert {"model.safetensors", "config.json", "README.md"} <= set(merged["files"])
    assert merged["repo_id"] == "me/tiny-merged"
    assert card_of(merged).data.library_name == "transformers"
    assert "me/tiny-merged" in card_of(adapter).text


def test_merged_repo_needs_a_merged_folder(runs, token, monkeypatch):
    FakeHub().install(monkeypatch)
    with pytest.raises(HubError, match="hub.merged_repo_id: .* has no merged/ folder"):
        push(runs["full"], "me/x", merged_repo_id="me/y")


def test_adapter_with_local_base_and_no_hub_id_is_refused(runs, token, monkeypatch, tmp_path):
    hub = FakeHub().install(monkeypatch)
    folder = tmp_path / "lora"
    shutil.copytree(runs["lora"], folder)
    recipe = (folder / "recipe.yaml").read_text().replace(f"base_model: {BASE}", "base_model: null")
    (folder / "recipe.yaml").write_text(recipe)
    with pytest.raises(HubError, match="hub.base_model: the adapter's base model .* is a local folder"):
        push(folder, "me/x")
    push(folder, "me/x", base_model="someone/base")  # named on the command line instead
    assert json.loads(hub.uploads[0]["files"]["adapter_config.json"])["base_model_name_or_path"] == "someone/base"


def test_failed_push_loses_nothing_and_can_be_retried(runs, token, monkeypatch, capsys):
    before = tree_digest(runs["full"])
    FakeHub(fail=ConnectionError(f"connection reset (token {TOKEN})")).install(monkeypatch)
    assert main(["push", str(runs["full"]), "me/tiny-full"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "retry with: hf-transfer push" in err
    assert TOKEN not in err and "***" in err
    assert tree_digest(runs["full"]) == before
    hub = FakeHub().install(monkeypatch)
    assert main(["push", str(runs["full"]), "me/tiny-full"]) == 0
    assert len(hub.uploads) == 1


def test_no_token_is_a_clear_error(runs, monkeypatch):
    no_token(monkeypatch, runs["full"].parent)
    FakeHub().install(monkeypatch)
    with pytest.raises(HubError, match="no Hugging Face token found; set HF_TOKEN"):
        push(runs["full"], "me/x")


def test_a_token_inside_a_file_is_never_uploaded(runs, tmp_path, token, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    folder = tmp_path / "full"
    shutil.copytree(runs["full"], folder)
    with (folder / "recipe.yaml").open("a") as fh:  # as if the recipe had set training.hub_token
        fh.write(f"# hub_token: {TOKEN}\n")
    with pytest.raises(HubError, match="recipe.yaml contains your Hugging Face token; not uploading it"):
        push(folder, "me/x")
    assert not hub.uploads


def test_recipe_push_runs_after_the_local_save(tiny_bert, sentiment_files, tmp_path, token, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["hub"] = {"push": True, "repo_id": "me/auto", "private": False, "revision": "dev"}
    finetune(recipe)
    [sent] = hub.uploads
    assert sent["repo_id"] == "me/auto" and sent["revision"] == "dev"
    assert sent["files"]["metrics.json"] == (tmp_path / "out" / "metrics.json").read_bytes()


def test_recipe_push_without_token_fails_before_training(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    no_token(monkeypatch, tmp_path)
    recipe = text_recipe(tiny_bert, sentiment_files, tmp_path / "out")
    recipe["hub"] = {"push": True, "repo_id": "me/auto"}
    with pytest.raises(HubError, match="hub.push: no Hugging Face token"):
        finetune(recipe)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_push_to_a_repo_id_the_hub_refuses_is_one_line_before_anything(runs, token, monkeypatch):
    """Named as such, not as a failed upload whose retry hint repeats the same id."""
    hub = FakeHub().install(monkeypatch)
    for repo_id in ("me/my model", "a/b/c"):
        with pytest.raises(HubError, match=f"push: repo_id: '{repo_id}' is not a Hub repo id"):
            push(runs["full"], repo_id)
    assert not hub.calls


def test_push_without_repo_id_is_a_recipe_error():
    from hf_transfer.validate import load_recipe
    from hf_transfer.errors import RecipeError

    with pytest.raises(RecipeError, match="hub.repo_id: required when hub.push is true"):
        load_recipe({"model": {"name_or_path": "x"}, "data": {"path": "csv"}, "hub": {"push": True}})


def test_command_registry_matches_the_parser():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
