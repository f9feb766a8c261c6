"""Identity values against etcd's well-known single-member defaults."""

from keelson.cli.identity import compute_cluster_id, compute_member_id, format_id


def test_default_member_id_matches_etcd() -> None:
    # etcd with no flags: --initial-cluster default=http://localhost:2380, token etcd-cluster
    mid = compute_member_id(["http://localhost:2380"], "etcd-cluster")
    assert format_id(mid) == "8e9e05c52164694d"


def test_default_cluster_id_matches_etcd() -> None:
    mid = compute_member_id(["http://localhost:2380"], "etcd-cluster")
    assert format_id(compute_cluster_id([mid])) == "cdf818194e3a8c32"


def test_member_id_ignores_url_order_and_depends_on_token_and_time() -> None:
    a = compute_member_id(["http://b:2380", "http://a:2380"], "t")
    assert a == compute_member_id(["http://a:2380", "http://b:2380"], "t")
    assert a != compute_member_id(["http://a:2380", "http://b:2380"], "u")
    assert a != compute_member_id(["http://a:2380", "http://b:2380"], "t", added_at_unix=1)


def test_cluster_id_ignores_member_order() -> None:
    assert compute_cluster_id([3, 1, 2]) == compute_cluster_id([1, 2, 3])
    assert compute_cluster_id([1, 2]) != compute_cluster_id([1, 2, 3])
