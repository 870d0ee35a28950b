"""Runs of the default landscape shared by the tests that read them (one per xdist worker: the tests that
use them are in the xdist group "lourenco", so `make test` runs them on one worker)."""

from pathlib import Path

import pytest

from pipeline.runner import run

LOURENCO = Path("configs/landscapes/lourenco.yaml")


@pytest.fixture(scope="session")
def lourenco_run(tmp_path_factory):
    """lourenco as configured (sensitivity reruns included), chunk 2048: (RunResult, output folder)."""
    out = tmp_path_factory.mktemp("lourenco") / "run"
    return run(LOURENCO, out_dir=out, chunk_px=2048), out
