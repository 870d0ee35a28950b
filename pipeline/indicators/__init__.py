"""Indicator modules. Each has ``NAME``, ``compute(stack, ctx) -> IndicatorResult`` (see base.py)."""

from pipeline.indicators import connectivity, conversion, degradation, mining

REGISTRY = {"conversion": conversion, "connectivity": connectivity, "degradation": degradation, "mining": mining}
