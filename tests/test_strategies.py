import pytest
from torch import nn
from transformers import AutoModelForSequenceClassification

from hf_transfer.strategies.freeze import FullConfig, PartialConfig
from hf_transfer.strategies.peft import LoraConfig

from hf_transfer.strategies import apply_strategy
from hf_transfer.anatomy import find_blocks


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def model(tiny_bert):
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)


def test_find_blocks_is_the_encoder_layer_list(model):
    assert find_blocks(model.bert) is model.bert.encoder.layer


def test_find_blocks_generic_module_without_config():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(4, 4)
            self.small = nn.ModuleList([nn.Linear(1, 1)] * 5)
            self.stages = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    net = Net()
    assert find_blocks(net) is net.stages


def test_full_trains_everything(model):
    apply_strategy(model, FullConfig())
    assert trainable(model) == {n for n, _ in model.named_parameters()}


def test_frozen_backbone_trains_only_the_head(model):
    apply_strategy(model, PartialConfig(freeze="backbone"))
    assert trainable(model) == {"classifier.weight", "classifier.bias"}


def test_first_n_blocks_and_embeddings_frozen(model):
    apply_strategy(model, PartialConfig(freeze=1))
    names = trainable(model)
    assert not any(n.startswith("bert.embeddings") for n in names)
    assert not any(n.startswith("bert.encoder.layer.0.") for n in names)
    assert any(n.startswith("bert.encoder.layer.1.") for n in names)
    assert {"bert.pooler.dense.weight", "classifier.weight"} <= names


def test_freezing_more_blocks_than_exist_is_an_error(model):
    from hf_transfer.errors import ModelError

    with pytest.raises(ModelError, match="finetune.freeze: 5 blocks asked, the backbone has 2"):
        apply_strategy(model, PartialConfig(freeze=5))


def test_lora_trains_adapters_and_head(model):
    peft_model = apply_strategy(model, LoraConfig(r=4))
    names = trainable(peft_model)
    assert names and all("lora_" in n or "classifier" in n for n in names)
    assert any("lora_A" in n and "query" in n for n in names)
    assert any("classifier" in n for n in names)


def test_lora_dropout_defaults_to_pefts_and_a_recipe_value_reaches_every_adapter(model):
    """PEFT's own default (0: no dropout module, no dropped copy of each adapted input kept for the backward)."""
    import peft

    assert LoraConfig().dropout == peft.LoraConfig().lora_dropout == 0.0
    default = apply_strategy(model, LoraConfig(r=4))
    assert {type(m) for name, m in default.named_modules() if name.endswith("lora_dropout.default")} == {nn.Identity}
    dropped = apply_strategy(AutoModelForSequenceClassification.from_pretrained(model.name_or_path, num_labels=2),
                             LoraConfig(r=4, dropout=0.1))
    rates = {m.p for name, m in dropped.named_modules() if name.endswith("lora_dropout.default")}
    assert rates == {0.1}


def test_lora_falls_back_to_block_linears_for_unknown_architectures(model):
    model.config.model_type = "somethingnew"
    peft_model = apply_strategy(model, LoraConfig(r=2))
    names = trainable(peft_model)
    assert any("intermediate.dense.lora_A" in n for n in names)
