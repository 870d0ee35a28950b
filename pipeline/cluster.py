"""Where the dask graph runs (DESIGN.md §6): ``compute.scheduler`` of the landscape config.

- ``threads`` (default), ``synchronous``: dask's local schedulers in this process;
- ``processes``: dask's local process pool (each process gets GDAL_CACHEMAX through the pool initializer);
- ``local-cluster``: a dask.distributed LocalCluster started on this machine for the run (``compute.workers``
  worker processes of ``compute.threads_per_worker`` threads, ``compute.memory_limit_gb`` each) and closed at
  the end;
- ``tcp://HOST:PORT`` (or ``tls://``): an existing dask.distributed scheduler; the run connects a client and
  disconnects at the end, the cluster keeps running;
- ``distributed``: the dask.distributed Client already active in this Python process (Coiled, dask-gateway,
  dask-jobqueue: create the cluster and the client first, then call ``pipeline.runner.run``).

On a dask.distributed cluster every worker gets GDAL_CACHEMAX = ``compute.gdal_cachemax_mb`` from a worker
plugin (also workers that join later). Workers must reach the input paths (README, "Running on a cluster").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import dask

from pipeline.config import ComputeConfig


def set_gdal_cachemax(megabytes: int) -> None:
    """Bound GDAL's raster block cache in this process. GDAL 3.10 (rasterio 1.4 wheels) applies a change even after
    the cache is in use (checked with GDALGetCacheMax64); without it each process may take 5 % of the RAM."""
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(megabytes) * 2**20)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # both thresholds' initial value (bytes)
REUSED_BUFFER_BYTES = 128 * 2**20  # allocations below this come from malloc's heaps while a run computes
KEPT_FREE_BYTES = 2**30  # free memory a heap keeps at its top before handing it back


def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.util.find_library("c")
    if not libc or "musl" in libc:
        return None
    try:
        lib = ctypes.CDLL(libc)
    except OSError:
        return None
    return lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None


@contextmanager
def reusing_freed_buffers() -> Iterator[None]:
    """While a run computes, glibc's malloc keeps the chunk buffers that tasks free (arrays up to 128 MB) for
    the next tasks, instead of unmapping each and faulting fresh zeroed pages in for the next: at 576 Mpx x 2
    years, 1.9 M page faults became 0.9 M and system time 9-10 s became 7 s (with two mining helpers, 58.3-63.1 s
    against 65.5-66.5 s in alternating runs), for ~50 MB more peak memory. ``release_memory`` still hands freed memory back between stages. After the run both
    thresholds go back to glibc's initial 128 kB (fixed from then on, no longer adjusted by malloc). Nothing
    without glibc."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, REUSED_BUFFER_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
            libc.malloc_trim(0)


DEFERRED_FULL_COLLECTIONS = 2**31 - 1  # young-generation collections before an automatic full one: never, in practice


@contextmanager
def full_collections_at_stage_ends() -> Iterator[None]:
    """While a run computes, Python's automatic collections of its oldest generation wait for ``release_memory``,
    which collects after each indicator and each sensitivity variant; young objects are still collected as usual.
    A full collection walks every object the process holds with the GIL taken, so both dask threads stop: at
    576 Mpx x 2 years, 33 of them took 6.0 s of a 71 s run. The thresholds go back after the run, also when it
    fails."""
    thresholds = gc.get_threshold()
    gc.set_threshold(*thresholds[:2], DEFERRED_FULL_COLLECTIONS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def release_memory() -> None:
    """Hand memory freed by a finished stage back to the operating system (glibc's malloc_trim, as
    dask.distributed does for its workers); elsewhere only a garbage collection. Without it the chunk buffers
    of one indicator stay in the process's heap, and the next stage's peak comes on top of them."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def scheduler(compute: ComputeConfig) -> Iterator[object | None]:
    """Context in which ``dask.compute`` runs on the configured scheduler; yields the distributed Client
    (None for dask's local schedulers)."""
    set_gdal_cachemax(compute.gdal_cachemax_mb)
    if compute.scheduler in ("threads", "synchronous"):
        with dask.config.set(scheduler=compute.scheduler, num_workers=compute.workers):
            yield None
        return
    if compute.scheduler == "processes":
        init = partial(set_gdal_cachemax, compute.gdal_cachemax_mb)
        with dask.config.set({"scheduler": "processes", "num_workers": compute.workers,
                              "multiprocessing.initializer": init}):
            yield None
        return
    with _client(compute) as client:
        client.register_plugin(_gdal_cache_plugin(compute.gdal_cachemax_mb), name="pipeline-gdal-cachemax")
        with dask.config.set(scheduler="dask.distributed"):  # the client is the default one (set_as_default)
            yield client


@contextmanager
def _client(compute: ComputeConfig):
    try:
        from distributed import Client, LocalCluster, get_client
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise RuntimeError(f"compute.scheduler {compute.scheduler!r} needs dask.distributed: pip install distributed") from exc
    if compute.scheduler == "distributed":
        yield get_client()  # the user's client: left open
    elif compute.scheduler == "local-cluster":
        memory = f"{compute.memory_limit_gb}GB" if compute.memory_limit_gb else "auto"
        with LocalCluster(n_workers=compute.workers, threads_per_worker=compute.threads_per_worker,
                          memory_limit=memory, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
    else:
        with Client(compute.scheduler) as client:
            yield client


def _gdal_cache_plugin(megabytes: int):
    """A worker plugin that sets GDAL_CACHEMAX in every worker process when it starts (workers that join
    later included). Defined here so importing pipeline does not import distributed."""
    from distributed import WorkerPlugin

    class GdalCacheMax(WorkerPlugin):
        def setup(self, worker) -> None:
            set_gdal_cachemax(megabytes)

    return GdalCacheMax()
