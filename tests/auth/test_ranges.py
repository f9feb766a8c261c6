"""Key-range permissions against a brute-force model over a small key alphabet.

The model: a permission or request denotes a set of keys; a request is allowed when every
key of it is in the union of the user's permissions of the right type. Keys of permissions
and requests are drawn from {a, b} (range ends from {a, b, c}), at most 2 bytes long, so
every interval endpoint (including ``k + b"\\0"`` of a single key and prefix ends) lies in
the universe U of strings over {\\0, a, b, c} of length 1..3: each elementary interval
between endpoints then starts with a member of U, so checking the keys of U is exact.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from keelson.auth import KeyPermissions
from keelson.auth._ranges import affine_compare, covers, intersects, permission_interval
from keelson.proto.authpb import auth_pb2

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE

UNIVERSE = ["".join(p).encode() for n in (1, 2, 3) for p in itertools.product("\x00abc", repeat=n)]


def prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def model_contains(key: bytes, range_end: bytes, x: bytes) -> bool:
    if range_end == b"":
        return x == key
    if range_end == b"\x00":
        return x >= key
    return key <= x < range_end


keys = st.text(alphabet="ab", min_size=1, max_size=2).map(str.encode)
ENDS = sorted("".join(p).encode() for n in (1, 2) for p in itertools.product("abc", repeat=n))


@st.composite
def spans(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(key, range_end) of a single key, a range, a prefix or a from-key span."""
    key = draw(keys)
    shape = draw(st.sampled_from(["key", "range", "prefix", "from"]))
    if shape == "key":
        return key, b""
    if shape == "prefix":
        return key, prefix_end(key)
    if shape == "from":
        return key, b"\x00"
    end = draw(st.sampled_from([e for e in ENDS if e > key]))
    return key, end


perm_types = st.sampled_from([READ, WRITE, READWRITE])


@settings(max_examples=300, deadline=None)
@given(
    perms=st.lists(st.tuples(spans(), perm_types), max_size=6),
    request=spans(),
    write=st.booleans(),
)
def test_permits_matches_brute_force_model(
    perms: list[tuple[tuple[bytes, bytes], int]], request: tuple[bytes, bytes], write: bool
) -> None:
    merged = KeyPermissions.merge(
        auth_pb2.Permission(key=k, range_end=e, permType=t)  # type: ignore[arg-type]
        for (k, e), t in perms
    )
    wanted = (WRITE, READWRITE) if write else (READ, READWRITE)
    granted = [(k, e) for (k, e), t in perms if t in wanted]
    key, end = request
    requested = [x for x in UNIVERSE if model_contains(key, end, x)]
    expected = all(any(model_contains(k, e, x) for k, e in granted) for x in requested)
    assert merged.permits(key, end, write=write) == expected, (perms, request, write)


def test_shapes() -> None:
    perms = KeyPermissions.merge(
        [
            auth_pb2.Permission(key=b"foo", range_end=b"", permType=READ),
            auth_pb2.Permission(key=b"p/", range_end=b"p0", permType=READ),
            auth_pb2.Permission(key=b"z", range_end=b"\x00", permType=READ),
        ]
    )
    assert perms.permits(b"foo", b"", write=False)
    assert not perms.permits(b"foo", b"", write=True)
    assert not perms.permits(b"foo", b"fop", write=False)  # foo\x00.. is not granted
    assert perms.permits(b"p/a", b"p/b", write=False)
    assert perms.permits(b"p/", b"p0", write=False)
    assert not perms.permits(b"p", b"p0", write=False)
    assert perms.permits(b"zzz", b"\x00", write=False)
    assert not perms.permits(b"y", b"\x00", write=False)


def test_adjacent_permissions_join() -> None:
    perms = KeyPermissions.merge(
        [
            auth_pb2.Permission(key=b"a", range_end=b"b", permType=READ),
            auth_pb2.Permission(key=b"b", range_end=b"c", permType=READWRITE),
        ]
    )
    assert perms.permits(b"a", b"c", write=False)
    assert not perms.permits(b"a", b"c", write=True)


def test_whole_key_space() -> None:
    # etcdctl sends an empty-key --prefix/--from-key grant as key "\x00", end "\x00".
    perms = KeyPermissions.merge([auth_pb2.Permission(key=b"\x00", range_end=b"\x00")])
    assert perms.permits(b"\x00", b"\x00", write=False)
    assert perms.permits(b"anything", b"", write=False)


def test_empty_key_is_infinity_as_in_etcd() -> None:
    # A permission whose key is empty begins at +inf in etcd's affine order: it grants
    # nothing, and a request on the empty key is never covered.
    assert affine_compare(b"", b"\xff\xff") == 1
    perms = KeyPermissions.merge([auth_pb2.Permission(key=b"", range_end=b"\x00")])
    assert not perms.permits(b"a", b"", write=False)
    assert not perms.permits(b"a", b"\x00", write=False)
    everything = KeyPermissions.merge([auth_pb2.Permission(key=b"\x00", range_end=b"\x00")])
    assert not everything.permits(b"", b"", write=False)


def test_inverted_request_follows_etcd_compare() -> None:
    # [b, a) is "inside" [0, z) by etcd's Interval.Compare, so Contains says yes.
    assert intersects((b"b", b"a"), (b"0", b"z"))
    assert covers([(b"0", b"z")], (b"b", b"a"))
    assert not covers([], (b"b", b"a"))
    assert permission_interval(b"k", b"") == (b"k", b"k\x00")
    assert permission_interval(b"k", b"\x00") == (b"k", b"")
