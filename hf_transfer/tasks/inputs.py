"""`hf-transfer predict` arguments -> pipeline inputs, one reader per kind of input (task records name theirs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hf_transfer.errors import HfTransferError, first_line, not_utf8
from hf_transfer.tasks.audio import resample, sample_fault
from hf_transfer.tasks.readers import AUDIO_SUFFIXES


def text_inputs(items: list[str]) -> list[str]:
    """Strings as they are; an existing file (or `-`, standard input) contributes its non-empty lines."""
    texts: list[str] = []
    for item in items:
        if item == "-":
            lines = _utf8(sys.stdin.buffer.read(), "standard input")
        elif Path(item).is_file():
            lines = _utf8(Path(item).read_bytes(), item)
        elif Path(item).is_dir():  # it was classified as the text "<folder>"
            raise HfTransferError(f"predict: {item} is a folder; give texts, files of texts (one per line) or - "
                                  "(standard input)")
        else:
            texts.append(_text_argument(item))
            continue
        texts += [ln for ln in lines.splitlines() if ln.strip()]
    return texts


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HfTransferError(f"predict: {where} is {not_utf8(err)}") from None


def lone_surrogate(text: str) -> int | None:
    """Where the first lone surrogate (U+D800-U+DFFF) of `text` stands, or None. No tokenizer takes one; Python
    keeps the bytes of a command-line argument that is not UTF-8 as such (U+DC80-U+DCFF), and JSON may escape
    them ("\\ud800")."""
    try:
        text.encode("utf-8")  # in C: surrogates are the one thing a str holds that UTF-8 cannot encode
    except UnicodeEncodeError as err:
        return err.start
    return None


def _text_argument(item: str) -> str:
    """A text given on the command line, refused naming its first byte that is not UTF-8."""
    bad = lone_surrogate(item)
    if bad is not None:
        code = ord(item[bad])
        what = f"byte {bytes([code - 0xDC00])!r}" if code >= 0xDC80 else f"a lone surrogate U+{code:04X}"
        raise HfTransferError(f"predict: the text argument {item!r} is not UTF-8 ({what} at character {bad}); "
                              f"pass UTF-8 text, or a UTF-8 file of texts")
    return item


def file_inputs(items: list[str], suffixes: tuple[str, ...], kind: str, shown: str | None = None) -> list[str]:
    """Files as they are; a folder contributes every file under it whose suffix is one of `suffixes`, in
    name order (as `evaluate` reads a folder); `kind` and `shown` (default: the suffixes) name them in errors."""
    paths: list[str] = []
    for item in items:
        if Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise HfTransferError(f"predict: {item}: a folder with no {kind} files "
                                      f"({shown or ', '.join(suffixes)})")
            paths += found
        elif Path(item).is_file():
            paths.append(item)
        else:
            raise HfTransferError(f"predict: input file not found: {item}")
    return paths


def image_inputs(items: list[str]) -> list[str]:
    """Image paths, each checked to be an image PIL can read (its header and, where the format has them,
    its checksums) without decoding the pixels, which the pipeline does batch by batch."""
    from PIL import Image

    readable = tuple(sorted(e for e, kind in Image.registered_extensions().items() if kind in Image.OPEN))
    paths = file_inputs(items, readable, "image", ".png, .jpg, .webp or another format PIL opens")
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as err:  # noqa: BLE001 - PIL fails in many types on a bad file
            raise HfTransferError(f"predict: {path} is not an image PIL can read ({first_line(err)})") from None
    return paths


def audio_inputs(items: list[str]) -> list[Any]:
    """Audio paths, decoded with soundfile when it is installed (the pipeline needs ffmpeg otherwise); each
    decoded clip keeps its `path` to be shown beside its predictions (`at_rate` leaves it out of the pipeline's
    input)."""
    paths = file_inputs(items, AUDIO_SUFFIXES, "audio")
    try:
        import soundfile  # noqa: F401
    except ImportError:
        return paths
    decoded = []
    for path in paths:
        try:
            decoded.append(decode_audio(path) | {"path": path})
        except Exception as err:  # noqa: BLE001 - libsndfile fails in several types on a bad file
            raise HfTransferError(f"predict: {path} is not audio soundfile can read ({first_line(err)})") from None
        fault = sample_fault(decoded[-1]["raw"])
        if fault:
            raise HfTransferError(f"predict: {path} {fault}")
    return decoded


def decode_audio(source: Any) -> dict[str, Any]:
    """{raw: float32 mono samples, sampling_rate} from a path or a file object, decoded with soundfile
    (`predict`'s files and `serve`'s uploaded bytes alike)."""
    import soundfile

    data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    return {"raw": data.mean(axis=1), "sampling_rate": rate}


def at_rate(items: list[Any], rate: int | None) -> list[Any]:
    """Decoded audio inputs ({raw, sampling_rate}) resampled to the model's rate (the pipeline would need
    torchaudio to do it); other inputs as they are."""
    return [{"raw": resample(x["raw"], x["sampling_rate"], rate) if rate else x["raw"],
             "sampling_rate": rate or x["sampling_rate"]}
            if isinstance(x, dict) and "raw" in x else x for x in items]
