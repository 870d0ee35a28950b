"""cluster.reusing_freed_buffers: malloc keeps freed chunk buffers while a run computes, and its thresholds go
back afterwards, also when the run fails. cluster.full_collections_at_stage_ends: Python's full garbage collections
wait for release_memory while a run computes."""

import gc
import weakref

import pytest

from pipeline import cluster


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_thresholds_raised_while_running_and_restored_after(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(cluster, "_glibc", lambda: libc)
    with pytest.raises(RuntimeError):
        with cluster.reusing_freed_buffers():
            assert libc.calls == [("mallopt", cluster.M_MMAP_THRESHOLD, 128 * 2**20),
                                  ("mallopt", cluster.M_TRIM_THRESHOLD, 2**30)]
            raise RuntimeError("an indicator failed")
    assert libc.calls[2:] == [("mallopt", cluster.M_MMAP_THRESHOLD, 128 * 1024),
                              ("mallopt", cluster.M_TRIM_THRESHOLD, 128 * 1024), ("malloc_trim", 0)]


def test_without_glibc_nothing_is_set(monkeypatch):
    monkeypatch.setattr(cluster, "_glibc", lambda: None)
    with cluster.reusing_freed_buffers():
        pass
    cluster.release_memory()


def test_real_glibc_takes_the_settings():
    """On this machine's C library (glibc on Linux CI): mallopt returns 1 (success) for glibc's initial
    thresholds, and runs the context without error."""
    libc = cluster._glibc()
    if libc is None:
        pytest.skip("not glibc")
    with cluster.reusing_freed_buffers():
        buffers = [bytearray(8 * 2**20) for _ in range(4)]  # allocated and freed inside the context
        del buffers
    assert libc.mallopt(cluster.M_MMAP_THRESHOLD, cluster.GLIBC_DEFAULT_THRESHOLD) == 1
    assert libc.mallopt(cluster.M_TRIM_THRESHOLD, cluster.GLIBC_DEFAULT_THRESHOLD) == 1


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the garbage collector frees it


def test_full_collections_wait_for_release_memory():
    """Garbage that reached the oldest generation outlives the young collections of many allocations inside the
    context, and release_memory frees it; outside, the thresholds are Python's again, also after a failure."""
    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with cluster.full_collections_at_stage_ends():
            assert gc.get_threshold() == (*before[:2], cluster.DEFERRED_FULL_COLLECTIONS)
            node = Node()
            alive = weakref.ref(node)
            gc.collect(1)  # node survives (still referenced) into the oldest generation
            del node
            churn = [[] for _ in range(before[0] * before[1] * 20)]  # 20 collections of the middle generation
            del churn
            assert alive() is not None
            cluster.release_memory()
            assert alive() is None
            raise RuntimeError("an indicator failed")
    assert gc.get_threshold() == before
