"""Indicator modules. Each has ``NAME``, ``compute(stack, ctx) -> IndicatorResult`` (see base.py)."""

from pipeline.indicators import connectivity, conversion, mining

REGISTRY = {"conversion": conversion, "connectivity": connectivity, "mining": mining}
