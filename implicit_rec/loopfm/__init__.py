"""LoopFM: historical FM representations as VM features (store, study pipeline, transfer analysis)."""

from .store import HistoricalStore
from .transfer import decomposition, markdown_table, transfer_ratios

__all__ = ["HistoricalStore", "transfer_ratios", "decomposition", "markdown_table"]
