"""hf-transfer: recipe-driven transfer learning on the Hugging Face stack."""

__version__ = "0.1.0"


def finetune(recipe_or_path, **kwargs):
    """Fine-tune from a recipe path, dict or Recipe; see `hf_transfer.train.finetune`."""
    from hf_transfer.train import finetune as _finetune

    return _finetune(recipe_or_path, **kwargs)


__all__ = ["finetune", "__version__"]
