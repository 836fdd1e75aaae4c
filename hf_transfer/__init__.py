"""hf-transfer: recipe-driven transfer learning on the Hugging Face stack."""

__version__ = "0.1.0"


def finetune(recipe_or_path, **kwargs):
    """Fine-tune from a recipe path, dict or Recipe; see `hf_transfer.runs.finetune`."""
    from hf_transfer.runs import finetune as _finetune  # imported on first use: `import hf_transfer` stays light

    return _finetune(recipe_or_path, **kwargs)


__all__ = ["finetune", "__version__"]
