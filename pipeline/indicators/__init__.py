"""Indicator modules. Each has ``NAME``, ``compute(stack, ctx) -> IndicatorResult`` (see base.py)."""

from pipeline.indicators import conversion

REGISTRY = {"conversion": conversion}
