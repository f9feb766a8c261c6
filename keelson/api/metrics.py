"""Prometheus metrics under etcd's names, read from the member when scraped.

Each exporter owns its state (no process-global registry, so several members can run in
one test process). The etcd families are written out here because prometheus_client would
rename counters to ``*_total`` and etcd's names must stay exact; prometheus_client supplies
the ``process_*`` families. Values are taken from the member at scrape time (Status, alarms,
the key index's live-key count, kept in O(1) by the index) rather than counted on the hot
path; the names, types and
labels are etcd 3.4's so dashboards and alerts written for etcd work:

``etcd_server_has_leader``, ``etcd_server_is_leader``, ``etcd_server_is_learner``,
``etcd_server_id``, ``etcd_server_version``, ``etcd_cluster_version``,
``etcd_server_leader_changes_seen_total``, ``etcd_server_proposals_committed_total``,
``etcd_server_proposals_applied_total``, ``etcd_server_proposals_pending``,
``etcd_server_quota_backend_bytes``, ``etcd_server_health_success``,
``etcd_server_health_failures``, ``etcd_mvcc_db_total_size_in_bytes``,
``etcd_mvcc_db_total_size_in_use_in_bytes``, ``etcd_debugging_mvcc_keys_total``,
``etcd_disk_wal_fsync_duration_seconds`` and ``etcd_disk_backend_commit_duration_seconds``
(histograms with etcd's buckets, ``keelson.server.disk_metrics``), and the standard
``process_*`` metrics.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.disk_metrics import HistogramSnapshot

SERVER_VERSION = "3.4.0"
CLUSTER_VERSION = "3.4"


def _family(name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> str:
    """One metric family in Prometheus' text format (0.0.4), named exactly ``name``."""
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {float(value)!r}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _render(v: dict[str, Any]) -> str:
    is_leader = bool(v["leader"]) and v["leader"] == v["member_id"]
    out = [
        _family("etcd_server_has_leader", "gauge",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
                [("", 1 if v["leader"] else 0)]),
        _family("etcd_server_is_leader", "gauge",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                [("", 1 if is_leader else 0)]),
        _family("etcd_server_is_learner", "gauge",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
                [("", 1 if v["is_learner"] else 0)]),
        _family("etcd_server_id", "gauge",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with "
                "current ID.", [(f'{{server_id="{v["member_id"]:x}"}}', 1)]),
        _family("etcd_server_version", "gauge",
                "Which version is running. 1 for 'server_version' label with current version.",
                [(f'{{server_version="{SERVER_VERSION}"}}', 1)]),
        _family("etcd_cluster_version", "gauge",
                "Which version is running. 1 for 'cluster_version' label with current "
                "cluster version", [(f'{{cluster_version="{CLUSTER_VERSION}"}}', 1)]),
        _family("etcd_server_leader_changes_seen_total", "counter",
                "The number of leader changes seen.", [("", v["leader_changes"])]),
        _family("etcd_server_health_success", "counter",
                "The total number of successful health checks", [("", v["health_ok"])]),
        _family("etcd_server_health_failures", "counter",
                "The total number of failed health checks", [("", v["health_failed"])]),
        _family("etcd_server_proposals_committed_total", "gauge",
                "The total number of consensus proposals committed.", [("", v["committed"])]),
        _family("etcd_server_proposals_applied_total", "gauge",
                "The total number of consensus proposals applied.", [("", v["applied"])]),
        _family("etcd_server_proposals_pending", "gauge",
                "The current number of pending proposals to commit.", [("", v["pending"])]),
        _family("etcd_server_quota_backend_bytes", "gauge",
                "Current backend storage quota size in bytes.", [("", v["quota"])]),
        _family("etcd_mvcc_db_total_size_in_bytes", "gauge",
                "Total size of the underlying database physically allocated in bytes.",
                [("", v["db_size"])]),
        _family("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge",
                "Total size of the underlying database logically in use in bytes.",
                [("", v["db_in_use"])]),
        _family("etcd_debugging_mvcc_keys_total", "gauge", "Total number of keys.",
                [("", v["keys"])]),
        _histogram("etcd_disk_wal_fsync_duration_seconds",
                   "The latency distributions of fsync called by WAL.", v["wal_fsync"]),
        _histogram("etcd_disk_backend_commit_duration_seconds",
                   "The latency distributions of commit called by backend.",
                   v["backend_commit"]),
    ]
    return "".join(out)


def _histogram(name: str, doc: str, h: HistogramSnapshot) -> str:
    """A histogram family: cumulative ``_bucket`` samples (``le`` as Go's client writes
    it), then ``_sum`` and ``_count``."""
    finite = zip(h.bounds, h.cumulative[:-1], strict=True)
    samples: list[tuple[str, float]] = [(f'_bucket{{le="{b:g}"}}', c) for b, c in finite]
    samples += [('_bucket{le="+Inf"}', h.cumulative[-1]), ("_sum", h.total),
                ("_count", h.count)]
    return _family(name, "histogram", doc, samples)


class MetricsExporter:
    """Renders one member's metrics; :meth:`render` must run on the member's loop."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._process)
        self.health_ok = 0
        self.health_failed = 0

    def count_health(self, healthy: bool) -> None:
        if healthy:
            self.health_ok += 1
        else:
            self.health_failed += 1

    async def render(self) -> bytes:
        srv = self._server
        st = await srv.status(pb.StatusRequest())
        values = {
            "leader": st.leader,
            "member_id": st.header.member_id,
            "is_learner": st.isLearner,
            "leader_changes": srv.leader_changes,
            "committed": st.raftIndex,
            "applied": st.raftAppliedIndex,
            "pending": srv.pending_proposals(),
            "quota": srv.quota_bytes(),
            "health_ok": self.health_ok,
            "health_failed": self.health_failed,
            "db_size": st.dbSize,
            "db_in_use": st.dbSizeInUse,
            "keys": srv.key_count(),
            "wal_fsync": srv.wal_fsync_seconds.snapshot(),
            "backend_commit": srv.backend_commit_seconds.snapshot(),
        }
        return _render(values).encode() + generate_latest(self._process)
