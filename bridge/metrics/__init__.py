"""Prometheus metrics on a listener of their own (``metrics`` in the config), off by default.

The SFU knows nothing of Prometheus: :class:`.media.MediaCollector` reads its counters when
Prometheus scrapes. The focus and the database count into the instruments of
:mod:`.instruments`, which cost an integer increment whether metrics are served or not.
"""

from __future__ import annotations

from .database import count_database_errors
from .server import MetricsServer, MetricsSettings

__all__ = ["MetricsServer", "MetricsSettings", "count_database_errors"]
