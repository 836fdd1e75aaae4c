"""The errors hf-transfer reports as one line (no traceback unless --debug)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): a one-line cause."""
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


def not_utf8(err: UnicodeDecodeError) -> str:
    """What a UnicodeDecodeError means for a user's file: the first bad byte and where, and the fix."""
    return f"not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at position {err.start}); save it as UTF-8"


class HfTransferError(Exception):
    """A problem with the user's input; the message names what is wrong and where."""


class RecipeError(HfTransferError):
    """The recipe (or an override) is invalid."""


class DataError(HfTransferError):
    """The dataset cannot be used as the recipe describes it."""


class ModelError(HfTransferError):
    """The model cannot be loaded or adapted as the recipe asks."""


class OutputError(HfTransferError):
    """The output folder would be overwritten or cannot be written."""


class HubError(HfTransferError):
    """Pushing to the Hugging Face Hub failed or cannot start; the local folder is intact."""


class VerifyError(HfTransferError):
    """A saved folder does not reload, or does not reproduce its metrics, as a Hub user would see it."""


class DependencyError(HfTransferError):
    """An optional extra that the recipe or the launcher needs is not installed."""


class TrainingError(HfTransferError):
    """Training cannot go on (e.g. the loss became NaN)."""
