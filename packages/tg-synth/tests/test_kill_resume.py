"""SIGKILL a real ``tg-synth run`` at random points, restart it: the output is exactly that of an
uninterrupted run, and no call whose result was committed is ever made again (counted at the server)."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tg_data.io import read_samples
from tg_synth.config import load_config
from tg_synth.run import run

CONCURRENCY = 2


def _config(path: Path, shapes_root: Path, base_url: str, out: Path) -> Path:
    path.write_text(f"""
progress = false
[input]
kind = "shapes"
shapes_root = "{shapes_root}"
[backends.mllm]
kind = "openai"
base_url = "{base_url}"
model = "shapes-oracle"
api_key_env = ""
concurrency = {CONCURRENCY}
[output]
dir = "{out}"
shard_rows = 40
""")
    return path


def _start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tg_synth.cli", "run", str(config), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _committed(cache: Path) -> set[str]:
    if not cache.exists():
        return set()
    try:
        db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5)
        try:
            return {r[0] for r in db.execute("SELECT key FROM results")}
        finally:
            db.close()
    except sqlite3.OperationalError:  # created but no table yet
        return set()


def _outputs(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "stage2": [s.to_dict() for s in read_samples(str(out / "stage2"))],
        "stage3": [s.to_dict() for s in read_samples(str(out / "stage3"))],
        "crops": (out / "crops.jsonl").read_text(),
        "quarantine": (out / "quarantine.jsonl").read_text(),
        "shards": (manifest["stage2"]["shards"], manifest["stage3"]["shards"]),
        "counts": (manifest["tasks"], manifest["filtered"], manifest["failures"]),
    }


def test_sigkill_at_random_points_then_resume(tmp_path: Path, shapes_root: Path, loopback) -> None:
    server = loopback(latency_s=0.03)
    calls = server.endpoint.calls

    ref_out = tmp_path / "ref"  # the uninterrupted run, in process (the same code the CLI runs)
    run(load_config(str(_config(tmp_path / "ref.toml", shapes_root, server.base_url, ref_out))))
    ref_keys = {c["key"] for c in calls}
    ref_calls = len(calls)
    total_rows = len(_committed(ref_out / "cache.sqlite"))
    assert len(ref_keys) == ref_calls  # no faults: one call per record
    calls.clear()

    out = tmp_path / "killed"
    config = _config(tmp_path / "killed.toml", shapes_root, server.base_url, out)
    cache = out / "cache.sqlite"
    rng = random.Random(20240531)
    snapshots: list[tuple[int, set[str]]] = []  # (calls logged so far, keys committed) after each kill
    killed_mid_run = 0
    for attempt in range(3):
        # two kills at random points of the live pass, one once every step is committed (assembly)
        target = total_rows if attempt == 2 else rng.randint(1, total_rows - 1)
        proc = _start(config)
        while proc.poll() is None and len(_committed(cache)) < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += proc.wait() == -signal.SIGKILL
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()
        snapshots.append((len(calls), _committed(cache)))
    assert killed_mid_run >= 2

    final = _start(config)
    assert final.wait(120) == 0, final.stderr.read().decode()

    # exactly the records of the uninterrupted run: no record lost, none duplicated
    assert _outputs(out) == _outputs(ref_out)
    assert _committed(cache) == _committed(ref_out / "cache.sqlite")
    # no committed call was made again after any kill
    for position, committed in snapshots:
        repeated = [c for c in calls[position:] if c["key"] in committed]
        assert not repeated, repeated[:3]
    # only calls in flight at a kill can repeat: at most the concurrency per kill
    assert {c["key"] for c in calls} == ref_keys
    assert len(calls) <= ref_calls + killed_mid_run * CONCURRENCY
