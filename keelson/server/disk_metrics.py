"""Latency histograms of the member's two fsync paths, under etcd's metric names.

``etcd_disk_wal_fsync_duration_seconds`` (every WAL fdatasync) and
``etcd_disk_backend_commit_duration_seconds`` (every commit of the backend's batch
transaction) are the two figures operators watch first on an etcd cluster: a slow disk
shows there before it shows anywhere else. The storage layers only report each duration
through an observer callable, so they carry no metrics code; this module keeps the counts,
with etcd's buckets (1 ms doubling to 8.192 s), and the exporter in ``keelson.api.metrics``
renders them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

ETCD_DISK_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(14))
"""Upper bounds, seconds: etcd's ``prometheus.ExponentialBuckets(0.001, 2, 14)``."""


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # observations <= each bound, then the +Inf count
    total: float  # sum of the observations, seconds
    count: int


class DurationHistogram:
    """Counts of observed durations per bucket, their sum and number; ``observe`` is cheap
    enough for every fsync (a bisect and two additions)."""

    __slots__ = ("_bounds", "_counts", "_sum", "_count")

    def __init__(self, bounds: tuple[float, ...] = ETCD_DISK_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be increasing and not empty")
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._count = 0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds
        self._count += 1

    def snapshot(self) -> HistogramSnapshot:
        cumulative: list[int] = []
        running = 0
        for c in self._counts:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self._bounds, tuple(cumulative), self._sum, self._count)
