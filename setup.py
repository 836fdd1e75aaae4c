"""Build step: the wheel carries copies of the repository's recipes and Accelerate configs.

The top-level `recipes/` and `accelerate_configs/` folders stay the only source; `build_py` copies their
YAML files into the built package as `hf_transfer/_shipped/<folder>/`, where `hf_transfer.shipped`
finds them in an installed wheel. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("recipes", "accelerate_configs")


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            target = Path(self.build_lib) / "hf_transfer" / "_shipped" / name
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((root / name).glob("*.yaml")):
                shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildWithShippedFiles})
