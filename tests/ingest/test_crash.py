"""``kill -9`` of a real ingest process loses seconds, not the run.

A child process ingests the synthetic scene through the public API with a
0.5 s flush interval, printing its progress; the test kills it with SIGKILL at
chosen moments, then checks that the store opens, holds only whole rows, that
the rows lost are at most about the flush interval's worth, and that the next
run computes exactly what is missing (no stored row computed twice).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from rsembed_store import Store

ROOT = Path(__file__).resolve().parents[2]
FLUSH_S = 0.5
# what a kill may lose beyond the flush interval: the write in progress and the
# error of the chunk-size estimate, on a loaded 2-core machine
SLACK_S = 0.75
# kill moments, seconds after the child starts computing (the first may come before the first write)
KILL_AT = (0.5, 1.5, 2.5)
PACE_S = 0.015  # seconds a request of the killed runs costs at least

CHILD = textwrap.dedent('''
    """An ingest that reports each step on stdout (JSON lines), for the crash test."""
    import json, sys, time

    from rsembed_store import BBox, Store, TemporalSpec
    from rsembed_store.ingest.models.spectral import SpectralModel
    from rsembed_store.ingest.plan import plan
    from rsembed_store.model import ModelInfo
    from rsembed_store.registry import register_model


    class Paced(SpectralModel):
        """The spectral featuriser with a fixed cost per request (PACE seconds), like a slower model."""

        info = ModelInfo(**{**SpectralModel.info.__dict__, "id": "spectral_paced"})

        def embed_batch(self, items, **kw):
            time.sleep(PACE * len(items))
            return super().embed_batch(items, **kw)


    register_model("spectral_paced", Paced)
    db, scenes, bbox, flush = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
    PACE = float(sys.argv[5])
    store = Store.open(db)
    the_plan = plan("spectral_paced", BBox(*bbox), 10, TemporalSpec.year(2023)).check_cache(store)


    def say(event, **fields):
        print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


    say("start", requests=len(the_plan.requests), cached=the_plan.cached)
    summary = store.ingest(the_plan.requests, config={"sources": {"s2-l2a": scenes}}, flush_seconds=flush, progress=False,
                           on_batch=lambda s: say("progress", computed=s.computed, cached=s.cached,
                                                  failed=s.failed))
    say("done", **{k: v for k, v in summary.to_dict().items() if k != "failures"})
''')


def _child(tmp_path, scene, flush=FLUSH_S, pace=PACE_S):
    out, manifest = scene
    w, s, e, n = manifest["bounds_lonlat"]
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, str(script), str(tmp_path / "db"), str(out / "scenes"),
            json.dumps([w + 0.003, s + 0.003, e - 0.003, n - 0.003]), str(flush), str(pace)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _events(lines):
    return [json.loads(line) for line in lines if line.strip()]


def _run_and_kill(tmp_path, scene, kill_at):
    """Start a child, SIGKILL it ``kill_at`` s after it starts computing; its events and the kill time."""
    proc = _child(tmp_path, scene)
    try:
        first = proc.stdout.readline()
        assert first, proc.stderr.read()
        start = json.loads(first)
        assert start["event"] == "start"
        time.sleep(max(0.0, start["t"] + kill_at - time.monotonic()))
        killed_at = time.monotonic()  # the same clock as the child's (CLOCK_MONOTONIC)
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    events = [start] + _events(rest.splitlines())
    assert events[-1]["event"] != "done", "the ingest finished before the kill: give it more work"
    return events, killed_at


def _rows(tmp_path):
    """The keys stored (each once, each row whole), or [] when nothing was written yet."""
    store = Store.open(tmp_path / "db", create=False)
    spaces = [s.space for s in store.spaces() if s.model == "spectral_paced"]
    if not spaces:
        return []
    table = store.to_arrow(spaces[0], columns=["key", "vector", "request"])
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)), "a key is stored twice"
    vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    assert vectors.shape == (len(keys), 44) and np.isfinite(vectors).all()
    assert pc.all(pc.greater(pc.utf8_length(table.column("request")), 0)).as_py() in (True, None)
    return keys


def test_kill_9_loses_about_the_flush_interval_and_the_rerun_computes_only_the_rest(tmp_path, small_scene):
    stored = 0
    losses = []
    for kill_at in KILL_AT:
        events, killed_at = _run_and_kill(tmp_path, small_scene, kill_at)
        start, progress = events[0], [e for e in events if e["event"] == "progress"]
        # nothing stored is computed again: this run set out to compute exactly what was missing
        assert start["cached"] == stored
        rows = len(_rows(tmp_path))
        computed = progress[-1]["computed"] if progress else 0
        assert stored <= rows <= stored + computed
        # the rows present are those computed up to (at most) about FLUSH_S before the kill
        made = [e["t"] for e in progress if stored + e["computed"] >= rows]
        written_by = made[0] if rows > stored else start["t"]
        loss_s = killed_at - written_by
        losses.append(round(loss_s, 2))
        assert loss_s <= FLUSH_S + SLACK_S, (kill_at, loss_s, rows, progress[-3:])
        if kill_at >= 1.0:
            assert rows > stored, "a kill after several flush intervals found nothing written"
            # progress kept coming, several times a second
            assert len(progress) >= kill_at / FLUSH_S
        stored = rows
    proc = _child(tmp_path, small_scene, pace=0.0)  # the rest, at full speed
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = _events(out.splitlines())
    done = events[-1]
    assert done["event"] == "done" and done["failed"] == 0
    assert done["cached"] == stored and done["computed"] == done["requested"] - stored
    assert len(_rows(tmp_path)) == done["requested"]
    print(f"loss per kill (s): {losses}; flush {FLUSH_S} s")
