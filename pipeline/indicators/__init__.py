"""Indicator modules. Each has ``NAME``, ``compute(stack, ctx) -> IndicatorResult`` (see base.py)."""

from pipeline.indicators import connectivity, conversion

REGISTRY = {"conversion": conversion, "connectivity": connectivity}
