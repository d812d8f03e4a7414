"""LoopFM: historical FM representations as VM features (store, the study's steps, transfer analysis)."""

from .store import HistoricalStore
from .transfer import decomposition, ratios_markdown, transfer_ratios

__all__ = ["HistoricalStore", "transfer_ratios", "decomposition", "ratios_markdown"]
