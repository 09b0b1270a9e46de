"""A non-editable install: the wheel `pip` builds from setup.py holds the product packages and
the shipped configs (package data), nothing of the tests, examples or test support, and the
installed copy, with no repository on the path, reads its configs by name."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_READ_CONFIGS = """
import json, sys
import yaml
import cross4d_core
from cross4d_core.configs import train_config, train_config_names
from cross4d_core.training.config import TrainConfig, load_config

names = train_config_names()
mappings = [isinstance(yaml.safe_load(train_config(name).read_text()), dict) for name in names]
pretrain = [type(load_config(TrainConfig, name)).__name__ for name in names if name.startswith("pretrain_")]
print(json.dumps({"package": cross4d_core.__file__, "names": names, "mappings": mappings, "pretrain": pretrain}))
"""


def test_the_wheel_ships_the_configs_and_the_installed_copy_reads_them(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing (build/, *.egg-info) in the repository
    source.mkdir()
    shutil.copy(REPO / "setup.py", source / "setup.py")
    for package in ("cross4d_core", "cross4d_ros"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("cross4d-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        archive.extractall(tmp_path / "site")

    shipped = sorted(p.name for p in (REPO / "cross4d_core" / "configs" / "train").glob("*.yaml"))
    assert shipped and {f"cross4d_core/configs/train/{name}" for name in shipped} <= set(files)
    assert "cross4d_core/py.typed" in files
    tops = {name.split("/")[0] for name in files if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"cross4d_core", "cross4d_ros"}, tops

    # The installed copy alone: PYTHONPATH is the unpacked wheel, the working directory has no configs.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run([sys.executable, "-c", _READ_CONFIGS], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.splitlines()[-1])
    assert Path(got["package"]).is_relative_to(tmp_path / "site"), got["package"]
    assert got["names"] == shipped and all(got["mappings"])
    assert got["pretrain"] == ["TrainConfig"] * sum(name.startswith("pretrain_") for name in shipped)
