"""runner._compute_settled: a failing task leaves no other task running behind the error (the aligned rasters
are closed right after it; closing them under a writing task crashed the process)."""

import threading
import time

import dask
import pytest

from pipeline.runner import _compute_settled


def test_failing_task_waits_for_the_running_ones():
    finished = threading.Event()

    def slow():
        time.sleep(0.5)
        finished.set()

    def fail():
        time.sleep(0.05)  # the slow task is running by now
        raise ValueError("bad class code")

    with dask.config.set(scheduler="threads", num_workers=2):
        with pytest.raises(ValueError, match="bad class code"):
            _compute_settled(dask.delayed(slow)(), dask.delayed(fail)())
        assert finished.is_set()  # plain dask.compute raises while slow() still sleeps


def test_results_as_dask_compute():
    with dask.config.set(scheduler="threads", num_workers=2):
        assert _compute_settled(dask.delayed(sum)([1, 2]), dask.delayed(max)(3, 4)) == (3, 4)
    with dask.config.set(scheduler="synchronous"):
        assert _compute_settled(dask.delayed(min)(5, 6)) == (5,)
