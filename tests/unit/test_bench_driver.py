"""The benchmark driver (bench/run.py): what it compares, and whose memory it reports."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import run

ROOT = Path(__file__).resolve().parents[2]


def _case(compared: list):
    def compare(ours, peer):
        compared.append((ours, peer))
        return {"identical": ours["inside_px"] == peer["inside_px"]}
    return SimpleNamespace(PEER="rasterio-mask", PEERS=("rasterio-mask", "pylandstats"), compare=compare)


def test_only_our_sides_are_compared_with_the_peer():
    """A second peer reused from another case (pylandstats, with connectivity's values) is not compared with
    rasterio.mask: make bench on a fresh clone stopped there with KeyError 'inside_px'."""
    compared = []
    case = _case(compared)
    results = {"ours": {"values": {"inside_px": 7.0}}, "rasterio-mask": {"values": {"inside_px": 7.0}},
               "pylandstats": {"values": {"all_natural/patch_count": 3.0}, "extrapolated": False},
               "ours-full": {"values": {"inside_px": 7.0}}}
    assert run.comparison(case, "ours", results) == {"identical": True}
    assert [run.comparison(case, side, results) for side in ("rasterio-mask", "pylandstats", "ours-full")] == [None] * 3
    assert compared == [({"inside_px": 7.0}, {"inside_px": 7.0})]


def test_extrapolated_peer_is_compared_with_our_run_at_the_fallback_size():
    compared = []
    case = _case(compared)
    results = {"ours": {"values": {"inside_px": 9.0}}, "rasterio-mask": {"values": {"inside_px": 4.0}, "extrapolated": True},
               "ours@fallback": {"values": {"inside_px": 4.0}}}
    assert run.comparison(case, "ours", results) == {"identical": True}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_a_childs_peak_is_its_own_not_its_parents():
    """After the driver holds a large landscape, a child's ru_maxrss still includes it (Linux counts the image
    before exec); the child's own VmHWM does not."""
    held = np.ones(400 * 2**20, np.uint8)  # 400 MB resident in this (the parent) process
    code = "from bench.run import own_peak_rss_mb; print(own_peak_rss_mb())"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    with proc.stdout:
        out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # as bench.run does: the rusage of the child
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen does not wait for it again
    assert proc.returncode == 0
    own = float(out)
    assert held.sum() == held.size
    assert usage.ru_maxrss / 1024 > 400  # the parent's pages, counted for the child
    assert 0 < own < 300  # the child's own: the interpreter and bench's imports
