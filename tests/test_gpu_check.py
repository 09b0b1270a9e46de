"""`make gpu-check --dry`: the GPU check's code at a tiny size on the CPU, so it cannot rot."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import MSR_CLIP_FRAMES, MSR_EPOCHS, MSR_MEAN_FRAMES, MSR_VIDEOS, SECTIONS

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_runs_every_section_and_writes_the_report(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry", "--out", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["dry"] and not result["failed"]
    assert {name: s["status"] for name, s in result["sections"].items()} == {name: "ok" for name in SECTIONS}
    rows = {(r["bench"], r["name"]): r for r in result["rows"]}
    tests = rows[("tests", "cuda tests passed")]
    assert tests["value"] >= 7 and tests["note"] == "0 failed, 0 skipped"  # ran on the CPU, none skipped
    for batch in (2, 4):
        for suffix in ("", " compiled"):
            name = f"B={batch} 4x64 fp32{suffix}"
            step, fwd, fwd_bwd = (rows[("pretrain", f"{name}: {part}")] for part in ("train step", "forward",
                                                                                       "forward + backward"))
            assert 0 < fwd["median_ms"] < fwd_bwd["median_ms"]
            assert rows[("pretrain", f"{name}: optimiser (clip + AdamW + logging)")]["value"] == pytest.approx(
                step["median_ms"] - fwd_bwd["median_ms"])
            assert step["min_ms"] <= step["median_ms"] <= step["max_ms"]
    assert rows[("ddp", "world size")]["value"] == 1 and rows[("ddp", "all_reduce of rank ids")]["value"] == 1
    msr = result["msr_estimate"]
    assert msr["clips_per_epoch"] == pytest.approx(MSR_VIDEOS * (MSR_MEAN_FRAMES - MSR_CLIP_FRAMES + 1))
    assert msr["total_min"] == pytest.approx(msr["clips_per_epoch"] / msr["precompute_clips_per_s"] / 60
                                             + MSR_EPOCHS * msr["clips_per_epoch"] / msr["train_clips_per_s"] / 60)
    markdown = (tmp_path / "gpu.md").read_text()
    assert "--dry" in markdown and "| msr | precompute + 100 epochs |" in markdown and "FAILED" not in markdown
