"""The recipes and Accelerate configs that come with hf-transfer: listing them and copying one to edit.

The repository's top-level `recipes/` and `accelerate_configs/` folders are the only source. A built
wheel carries copies of them inside the package (`hf_transfer/_shipped/<kind>/`, written by setup.py's
build step); a source checkout or an editable install reads the repository folders themselves.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from hf_transfer.errors import HfTransferError

KINDS = ("recipes", "accelerate_configs")
PACKAGED = Path(__file__).resolve().parent / "_shipped"
SOURCE = Path(__file__).resolve().parents[1]


def folder(kind: str) -> Path:
    """Where the shipped files of `kind` are: inside the installed package, else in the source checkout."""
    for root in (PACKAGED, SOURCE):
        if (root / kind).is_dir():
            return root / kind
    raise HfTransferError(f"no shipped {kind} found (looked in {PACKAGED / kind} and {SOURCE / kind})")


def files(kind: str) -> dict[str, Path]:
    """Name (file name without .yaml) -> path of every shipped file of `kind`, sorted by name."""
    return {p.stem: p for p in sorted(folder(kind).glob("*.yaml"))}


def summary(path: Path) -> str:
    """The first sentence of the file's leading comment (the lines before the first key; an indented
    comment line, such as an example command, ends it)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:]
        if text.startswith("  ") or not text.strip():
            break
        lines.append(text.strip())
    text = " ".join(lines)
    first = re.match(r"(.+?[.!?])(\s|$)", text)
    return first.group(1) if first else text


def listing() -> list[str]:
    """`hf-transfer recipes`: each shipped recipe and Accelerate config with its one-line summary."""
    out = []
    for kind in KINDS:
        named = files(kind)
        width = max(map(len, named), default=0)
        out.append(f"{kind} ({folder(kind)}):")
        out += [f"  {name:<{width}}  {summary(path)}" for name, path in named.items()]
    return out


def copy(name: str, dest: str | Path | None = None, force: bool = False) -> Path:
    """Copy the shipped recipe or Accelerate config `name` to `dest` (a file, or a folder to copy into;
    default: the current folder). An existing file is replaced only with `force`."""
    stem = Path(name).name.removesuffix(".yaml")
    found = [files(kind)[stem] for kind in KINDS if stem in files(kind)]
    if not found:
        known = ", ".join(n for kind in KINDS for n in files(kind))
        raise HfTransferError(f"init: no shipped recipe or Accelerate config named {name!r} (shipped: {known})")
    source = found[0]
    target = Path(dest) if dest is not None else Path.cwd()
    if isinstance(dest, str) and dest.endswith(("/", os.sep)) and not target.is_dir():  # Path() drops the slash
        raise HfTransferError(f"init: folder {dest} does not exist")
    if target.is_dir():
        target = target / source.name
    if target.exists() and not force:
        raise HfTransferError(f"init: {target} exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise HfTransferError(f"init: folder {target.parent} does not exist")
    try:
        shutil.copyfile(source, target)
    except OSError as err:
        raise HfTransferError(f"init: cannot write {target}: {err.strerror or err.__class__.__name__}") from None
    return target
