"""Model anatomy, found generically for any backbone: the pretrained body, its repeated blocks, the head, and how
long an input its absolute position embeddings cover.

Blocks are the `nn.ModuleList` whose length is the config's number of layers (the largest ModuleList when
the config does not say), or timm's own ordered groups; never attribute paths or name patterns.
"""

from __future__ import annotations

from torch import nn

from hf_transfer.errors import ModelError, RecipeError


def _hf_base(model: nn.Module) -> nn.Module | None:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) and base is not model else None


def _timm_model(model: nn.Module) -> nn.Module | None:
    """The timm model in `model` (itself or a wrapper around it), or None for other models."""
    if _hf_base(model) is not None:
        return None
    return next((m for m in model.modules() if _is_timm(m)), None)


def _is_timm(module: nn.Module) -> bool:
    return hasattr(module, "pretrained_cfg") and callable(getattr(module, "get_classifier", None))


def _inner_hf_model(model: nn.Module) -> nn.Module | None:
    """A body kept under another name than `base_model_prefix` (e.g. WhisperForAudioClassification's
    `encoder`): the one child that is a transformers model."""
    from transformers import PreTrainedModel

    inner = [m for m in model.children() if isinstance(m, PreTrainedModel)]
    return inner[0] if len(inner) == 1 else None


def backbone_of(model: nn.Module) -> nn.Module:
    """The pretrained body: `base_model` for transformers models, the timm model for timm (its head
    is told apart by `get_classifier()`), the model itself otherwise."""
    return _hf_base(model) or _timm_model(model) or _inner_hf_model(model) or model


def slot_of(root: nn.Module, module: nn.Module) -> tuple[nn.Module, str]:
    """(parent, attribute) under which `root` holds `module`: setattr(parent, attribute, other) puts
    another module in its place."""
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is module:
                return parent, name
    raise ModelError(f"{module.__class__.__name__} is not a part of {root.__class__.__name__}")


def classifier_slot(backbone: nn.Module) -> tuple[nn.Module, str] | None:
    """Where a backbone that holds its own classifier keeps it (timm: `get_classifier()`, the last layer
    of its forward); None for a backbone without one (transformers: the head sits beside `base_model`)."""
    if not _is_timm(backbone):
        return None
    head = backbone.get_classifier()
    if not isinstance(head, nn.Module):  # e.g. distilled ViTs: two classifiers
        raise ModelError(f"{backbone.__class__.__name__} has no single classifier to tell apart from its body")
    return slot_of(backbone, head)


def _timm_blocks(model: nn.Module) -> nn.ModuleList:
    """timm's own ordered grouping (the one its layer-wise LR decay uses): stem, blocks..., head.

    ResNet gives its four stages (layer1..layer4), ViT its transformer blocks, EfficientNet its
    stages. Models without `group_matcher`: their top-level children that hold parameters.
    """
    head = {id(p) for p in model.get_classifier().parameters()}
    try:
        from timm.models import group_modules

        matcher = model.group_matcher(coarse=True)
        groups = [[model.get_submodule(n) for n in names] for names in group_modules(model, matcher).values()]
        if "stem" in matcher:
            groups = groups[1:]
    except (AttributeError, NotImplementedError):
        groups = [[child] for child in model.children()]
    def body(m: nn.Module) -> bool:  # holds parameters outside the classifier
        return any(id(p) not in head for p in m.parameters())

    blocks = [nn.ModuleList([m for m in g if body(m)]) for g in groups]
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        raise ModelError(f"finetune: no blocks found in {model.__class__.__name__}")
    return nn.ModuleList(blocks)


def find_blocks(module: nn.Module) -> nn.ModuleList:
    """The repeated blocks of a backbone (e.g. BERT's encoder.layer; timm: see `_timm_blocks`)."""
    if _is_timm(module):
        return _timm_blocks(module)
    config = getattr(module, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None) if config is not None else None
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if n_layers:
        matching = [m for m in lists if len(m) == n_layers]
        if matching:
            return max(matching, key=lambda m: sum(p.numel() for p in m.parameters()))
    if not lists:
        raise ModelError(f"finetune: no repeated blocks found in {module.__class__.__name__}")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def head_parameter_names(model: nn.Module) -> set[str]:
    timm_model = _timm_model(model)
    if timm_model is not None:
        head = {id(p) for p in timm_model.get_classifier().parameters()}
        return {n for n, p in model.named_parameters() if id(p) in head}
    backbone = backbone_of(model)
    body = {id(p) for p in backbone.parameters()} if backbone is not model else set()
    return {n for n, p in model.named_parameters() if id(p) not in body}


def freeze_backbone(model: nn.Module, key: str = "finetune.freeze") -> None:
    """Freeze everything but the head (transformers: outside `base_model`; timm: `get_classifier()`)."""
    head = head_parameter_names(model)
    names = [n for n, _ in model.named_parameters()]
    if not head and encoder_of(model) is not None:
        raise ModelError(f"{key}: {model.__class__.__name__} has no separate head (its output layer is the decoder's "
                         "token embedding); use partial with freeze: encoder, or a PEFT method")
    if not head or len(head) == len(names):
        raise ModelError(f"{key}: cannot tell backbone from head in {model.__class__.__name__}")
    for n, p in model.named_parameters():
        if n not in head:
            p.requires_grad_(False)


def _stay_in_eval(module: nn.Module, args) -> None:
    if module.training:
        module.eval()


def keep_frozen_backbone_in_eval(model: nn.Module) -> None:
    """A frozen backbone runs in eval mode while the head trains: no dropout noise on fixed weights,
    no batch-norm statistics drifting. (A pre-forward hook, since Trainer calls model.train() each step.)"""
    backbone_of(model).register_forward_pre_hook(_stay_in_eval)


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The encoder of an encoder-decoder model (Whisper), None for other models."""
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return None
    get = getattr(model, "get_encoder", None)
    return get() if callable(get) else None


def freeze_encoder(model: nn.Module) -> None:
    """Freeze the encoder of an encoder-decoder model: the decoder adapts to fixed audio features."""
    encoder = encoder_of(model)
    if encoder is None:
        raise ModelError(f"finetune.freeze: encoder applies to encoder-decoder models (e.g. Whisper), "
                         f"not {model.__class__.__name__}")
    encoder.requires_grad_(False)
    encoder.register_forward_pre_hook(_stay_in_eval)


def freeze_first_blocks(model: nn.Module, n: int) -> None:
    """Freeze the stem (embeddings: everything registered before the blocks) and blocks[:n]; of the
    encoder in encoder-decoder models."""
    backbone = encoder_of(model) or backbone_of(model)
    blocks = find_blocks(backbone)
    if not 0 <= n <= len(blocks):
        raise ModelError(f"finetune.freeze: {n} blocks asked, the backbone has {len(blocks)}")
    block_params = {id(p) for p in blocks.parameters()}
    for p in backbone.parameters():  # registration order: stem, blocks, then post-block layers
        if id(p) in block_params:
            break
        p.requires_grad_(False)
    for block in list(blocks)[:n]:
        for p in block.parameters():
            p.requires_grad_(False)


def _adaptable(module: nn.Module) -> bool:
    """Linear layers and 1x1 (pointwise, ungrouped) convolutions."""
    if isinstance(module, nn.Conv2d):
        return module.kernel_size == (1, 1) and module.groups == 1
    return isinstance(module, nn.Linear)


# the LoRA fallback's targets in encoder-decoder models PEFT has no default for (Whisper): every attention's
# query and value projections, as Whisper LoRA recipes choose
ATTENTION_TARGETS = ("q_proj", "v_proj")


def block_layer_names(model: nn.Module) -> list[str]:
    """The LoRA fallback: full names of the Linear layers and 1x1 convs inside the blocks; for an
    encoder-decoder model, the query and value projections of every attention (encoder self-attention,
    decoder self- and cross-attention), as Whisper's LoRA recipes adapt it."""
    if encoder_of(model) is not None:
        found = sorted(n for n, m in model.named_modules()
                       if n.rsplit(".", 1)[-1] in ATTENTION_TARGETS and isinstance(m, nn.Linear))
        if found:
            return found
    inside = {id(m) for m in find_blocks(backbone_of(model)).modules()}
    return sorted(n for n, m in model.named_modules() if id(m) in inside and _adaptable(m))


def position_limit(model, embeddings) -> int | None:
    """The longest input the model's absolute position embeddings cover: those beside its token embeddings
    (BERT, RoBERTa, DistilBERT, ELECTRA, MPNet and kin); None for models without them (relative or rotary
    positions). RoBERTa-style positions start after the padding index, so they cover that many fewer."""
    for module in model.modules():
        table = getattr(module, "position_embeddings", None)
        if isinstance(table, nn.Embedding) and any(child is embeddings for child in module.children()):
            return table.num_embeddings - (0 if table.padding_idx is None else table.padding_idx + 1)
    return None


def output_layers(model: nn.Module, num_outputs: int) -> list[nn.Linear]:
    """The Linear layers with `num_outputs` outputs, in module order: a classifier's output layer is among them
    (BERT's classifier, MPNet's out_proj, timm's get_classifier(), wav2vec2's classifier), as a rule alone."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_outputs]


def check_text_model(processor, model, name: str, max_length: int, key: str = "model.name_or_path") -> None:
    """What fails at the first step (IndexError) or at the first long text, said before: a tokenizer with more
    tokens than the model `name` has embeddings (named under `key`), and a `model.max_length` past the model's
    absolute position embeddings. Nothing for a processor that is no tokenizer or a model without token
    embeddings."""
    if not hasattr(processor, "convert_tokens_to_ids") or not callable(getattr(model, "get_input_embeddings", None)):
        return
    try:
        embeddings = model.get_input_embeddings()
    except NotImplementedError:  # a model without token embeddings (e.g. wav2vec2)
        return
    if embeddings is None or not hasattr(embeddings, "num_embeddings"):
        return
    if len(processor) > embeddings.num_embeddings:
        raise ModelError(f"{key}: the tokenizer of {name!r} has {len(processor)} tokens but the model's embeddings "
                         f"hold {embeddings.num_embeddings}: they do not belong together")
    positions = position_limit(model, embeddings)
    if positions is not None and max_length > positions:
        raise RecipeError(f"model.max_length: {max_length} tokens, but {name!r} has position embeddings for "
                          f"{positions}; set model.max_length to {positions} or less")
