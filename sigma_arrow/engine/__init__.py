"""The whole-ruleset detection engine (``Engine``): masks and match records from record batches."""

from sigma_arrow.engine.core import BACKENDS, Engine, EngineProfile

__all__ = ["BACKENDS", "Engine", "EngineProfile"]
