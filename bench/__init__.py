"""Benchmarks (`make bench`): synthetic landscapes (bench.generate), timed cases (bench.connectivity) and the
driver that runs each case and its peer in separate processes and records the results (bench.run).

Nothing in ``pipeline/`` imports this package.
"""
