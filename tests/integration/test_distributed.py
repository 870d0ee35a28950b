"""The same run on a dask.distributed cluster: tables equal to the threaded scheduler's, byte for byte.

The clusters have real worker processes (not ``processes=False``), so everything in the graph is pickled and
sent to another process as on a real cluster; the mini landscape keeps each run to a few seconds.
"""

import shutil
from pathlib import Path

import pytest
import rasterio
import yaml

from pipeline.runner import run

distributed = pytest.importorskip("distributed")

MINI = Path("tests/data/mini")
TABLES = ("conversion.csv", "connectivity.csv", "mining.csv", "degradation.csv")


def _mini(tmp_path: Path, **compute) -> Path:
    """A copy of the mini landscape whose config sets ``compute``."""
    folder = tmp_path / "mini"
    shutil.copytree(MINI, folder)
    config = yaml.safe_load((folder / "mini.yaml").read_text())
    config["compute"] = compute
    (folder / "mini.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "mini.yaml"


@pytest.fixture(scope="module")
def threaded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("threads") / "out"
    run(MINI / "mini.yaml", out_dir=out)
    return out


def _assert_same_outputs(out: Path, reference: Path) -> None:
    for name in TABLES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    for path in reference.glob("landcover_*.tif"):
        with rasterio.open(path) as a, rasterio.open(out / path.name) as b:
            assert (a.read(1) == b.read(1)).all() and a.transform == b.transform


def test_existing_cluster_by_address(tmp_path, threaded):
    """compute.scheduler: tcp://HOST:PORT runs on that cluster and leaves it running; every worker has GDAL's
    block cache bounded by compute.gdal_cachemax_mb."""
    from rasterio.env import get_gdal_config

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as observer:
        config = _mini(tmp_path, scheduler=cluster.scheduler_address, workers=2, gdal_cachemax_mb=64)
        result = run(config, out_dir=tmp_path / "out")
        _assert_same_outputs(tmp_path / "out", threaded)
        assert result.manifest["config"]["compute"]["scheduler"].startswith("tcp://")
        cachemax = observer.run(get_gdal_config, "GDAL_CACHEMAX")
        assert len(cachemax) == 2 and set(cachemax.values()) == {64 * 2**20}
        assert len(observer.scheduler_info()["workers"]) == 2  # still running after the run


def test_local_cluster_started_and_closed_by_the_run(tmp_path, threaded):
    config = _mini(tmp_path, scheduler="local-cluster", workers=2, threads_per_worker=1, memory_limit_gb=2)
    run(config, out_dir=tmp_path / "out")
    _assert_same_outputs(tmp_path / "out", threaded)
    with pytest.raises(ValueError):
        distributed.get_client()  # no client is left behind


@pytest.mark.slow  # ~40 s: dask's process pool starts new processes for each of the run's ~30 computes
def test_processes_scheduler_writes_from_the_parent(tmp_path, threaded):
    """dask's process pool cannot pickle open datasets: blocks are written by the parent (write_gathered)."""
    config = _mini(tmp_path, scheduler="processes", workers=2)
    run(config, out_dir=tmp_path / "out")
    _assert_same_outputs(tmp_path / "out", threaded)
