"""What a pip user gets: the wheel built from this checkout, and its shipped recipes and Accelerate configs."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("recipes", "accelerate_configs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """(path of the wheel built from a copy of the tracked files, the build's output)."""
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-v",
                           "-w", str(dist)], cwd=src, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [built] = dist.glob("*.whl")
    return built, proc.stdout + proc.stderr


def test_the_wheel_ships_every_recipe_and_accelerate_config(wheel):
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    for kind in SHIPPED:
        expected = {f"hf_transfer/_shipped/{kind}/{p.name}" for p in (ROOT / kind).glob("*.yaml")}
        assert expected and expected == {n for n in names if n.startswith(f"hf_transfer/_shipped/{kind}/")}
    assert "hf_transfer/cli.py" in names and "hf_transfer/outputs/hubuser.py" in names


def test_an_installed_wheel_lists_and_copies_its_own_recipes(wheel, tmp_path):
    """Unpacked away from the checkout, hf_transfer.shipped reads the packaged copies."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel[0]).extractall(site)
    code = ("import sys; from hf_transfer import shipped\n"
            "print(shipped.folder('recipes')); print(len(shipped.files('recipes')))\n"
            "print(shipped.copy('cpu', sys.argv[1]))\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder, count, copied = proc.stdout.split()
    assert folder == str(site / "hf_transfer" / "_shipped" / "recipes")
    assert int(count) == len(list((ROOT / "recipes").glob("*.yaml")))
    assert Path(copied).read_bytes() == (ROOT / "accelerate_configs" / "cpu.yaml").read_bytes()
