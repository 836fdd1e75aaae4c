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


def test_the_wheel_metadata_has_the_new_name_and_a_license_without_build_warnings(wheel):
    built, log = wheel
    names = zipfile.ZipFile(built).namelist()
    meta = zipfile.ZipFile(built).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Name: hf-transfer-learning" in meta and "License-Expression: Apache-2.0" in meta
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert 'Requires-Dist: ipywidgets>=8; extra == "dev"' in meta
    assert "deprecated" not in log.lower() and "SetuptoolsWarning" not in log


def test_hub_downloads_work_with_this_hf_transfer_importable_and_the_old_switch_on(tmp_path):
    """huggingface_hub (>= 1.0) never imports `hf_transfer`, even with HF_HUB_ENABLE_HF_TRANSFER=1: a file
    downloads from a local stand-in for the Hub while this package is what `import hf_transfer` finds."""
    import hashlib
    import http.server
    import threading

    body = b'{"hello": "hub"}\n'

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def do_GET(self):
            self.do_HEAD()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = ("import sys, hf_transfer\nfrom huggingface_hub import hf_hub_download\n"
            "print(hf_transfer.__file__)\nprint(open(hf_hub_download('me/repo', 'config.json', cache_dir=sys.argv[1])).read())\n")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_ENABLE_HF_TRANSFER": "1",
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, content = proc.stdout.split("\n", 1)
    assert ours == str(ROOT / "hf_transfer" / "__init__.py") and content.strip() == body.decode().strip()


def _pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {canonicalize_name(n): v for n, v in (ln.split("==") for ln in lines if ln and not ln.startswith("#"))}


def test_constraints_pin_every_dependency_within_its_range_at_the_tested_version():
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in ("dev", "deepspeed") for r in project["optional-dependencies"][extra]]
    for req in map(Requirement, wanted):
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not pinned: run scripts/constraints.py"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req.specifier))
    for name, version in pins.items():  # the versions pinned are the ones installed here, where the tests run
        try:
            assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}, pinned {version}"
        except metadata.PackageNotFoundError:
            pass


def test_every_makefile_install_uses_the_constraints():
    lines = [ln.strip() for ln in (ROOT / "Makefile").read_text().splitlines() if "$(PIP) install" in ln]
    assert lines and all("-c constraints.txt" in ln for ln in lines), lines
