"""Write constraints.txt: the versions the test suite ran with, for what `make install-dev` installs.

    .venv/bin/python scripts/constraints.py            # rewrite constraints.txt from this environment
    .venv/bin/python scripts/constraints.py --check    # exit 1 if constraints.txt differs from it

The packages pinned are the closure of pyproject.toml's dependencies and its `dev`, `deepspeed`, `tune`,
`serve` and `ray` extras (`ray`: installed by `make test-slow`), plus the packages the Makefile installs by name (torch, torchvision, onnx), each at the version
installed in the running environment (what `pip freeze` reports for it), and nothing else that happens
to be installed there. torch's CUDA runtime packages (nvidia-*, cuda-*, triton) are left out: they
follow the torch build a machine gets (CPU, CUDA 12, CUDA 13), not our tests. The Makefile's install
targets pass the file to pip with `-c`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "constraints.txt"
EXTRAS = ("dev", "deepspeed", "tune", "serve", "ray")
TORCH_BUILD = re.compile(r"^(nvidia-|cuda-|triton$)")  # chosen by the torch build, not pinned here
PIP_INSTALL = re.compile(r"\$\(PIP\) install (.+)$", re.M)


def roots() -> list[Requirement]:
    """pyproject's dependencies and extras, and the packages the Makefile installs with their deps."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    found += [Requirement(r) for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    for line in PIP_INSTALL.findall((ROOT / "Makefile").read_text(encoding="utf-8")):
        words = line.split()
        if "--no-deps" in words or "-e" in words:  # files-only packages; the project itself
            continue
        found += [Requirement(w) for w, before in zip(words, ["", *words]) if not w.startswith("-") and before != "-c"]
    return found


def closure(start: list[Requirement]) -> dict[str, str]:
    """Canonical name -> installed version of every package `start` needs, transitively."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset]] = set()
    todo = [(r, frozenset()) for r in start]
    while todo:
        req, extras = todo.pop()  # extras: those its parent was asked for (they select its markers)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            continue
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req.name} is required ({req}) but not installed here: install it first")
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        pinned[name] = dist.version
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return pinned


def render(pinned: dict[str, str]) -> str:
    head = ("# The versions the test suite ran with (scripts/constraints.py writes this file; do not edit).\n"
            "# Used by the Makefile's install targets: pip install -c constraints.txt ...\n"
            "# torch's CUDA runtime packages (nvidia-*, cuda-*, triton) follow the torch build and are not pinned.\n")
    return head + "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())
                          if not TORCH_BUILD.match(name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with constraints.txt instead of writing it")
    text = render(closure(roots()))
    if parser.parse_args().check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print("constraints.txt is up to date" if same else "constraints.txt differs from this environment")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({sum(not line.startswith('#') for line in text.splitlines())} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
