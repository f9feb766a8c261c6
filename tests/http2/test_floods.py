"""The idle-frame budget: floods of frames that move no request forward end the connection.

PING, SETTINGS, PRIORITY, RST_STREAM of a closed stream, DATA with neither bytes nor
END_STREAM, CONTINUATION without END_HEADERS and unknown frame types each spend a token
(``keelson.http2._budget``); an empty budget is GOAWAY ENHANCE_YOUR_CALM. Legitimate
traffic (pings following our answers, a trickle among real frames) never runs it dry.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keelson.http2 import ErrorCode, H2Config
from keelson.http2 import _frames as fr
from tests.http2.wire import REQUEST, Client, goaway, goaway_code

BURST = 50
#: The handshake's SETTINGS spends one token; a few more frames refill almost nothing.
WITHIN = BURST - 5
BEYOND = BURST + 10


def _config(**kw: object) -> H2Config:
    return H2Config(idle_frame_burst=BURST, idle_frame_period_frames=10_000, **kw)  # type: ignore[arg-type]


def _open(c: Client) -> None:
    c.request(1)


def _open_and_reset(c: Client) -> None:
    c.request(1)
    c.send(fr.rst_stream_frame(1, ErrorCode.CANCEL))


def _start_block(c: Client) -> None:
    c.send(fr.headers_frame(1, c.block(REQUEST)[:3], end_headers=False))


def _nothing(c: Client) -> None:
    return None


def _reset_by_us(c: Client) -> None:
    c.request(1)
    c.conn.reset_stream(1)


def _goaway(c: Client) -> None:
    c.request(1)
    c.conn.goaway()
    c.frames()  # the graceful GOAWAY itself


def _same(frame: bytes) -> Callable[[Client, int], bytes]:
    return lambda c, n: frame * n


def _new_streams(c: Client, n: int) -> bytes:
    """HEADERS opening ``n`` new streams (ids above any used so far)."""
    first = c.conn._highest_stream_id + 2  # grows with ignored streams too
    return b"".join(c.headers(sid) for sid in range(first, first + 2 * n, 2))


def _reopen_reset_stream(c: Client, n: int) -> bytes:
    return b"".join(c.headers(1, end_stream=True) for _ in range(n))


FLOODS: dict[str, tuple[Callable[[Client], None], Callable[[Client, int], bytes]]] = {
    "ping": (_nothing, _same(fr.ping_frame(b"12345678"))),
    "ping-ack": (_nothing, _same(fr.ping_frame(b"12345678", ack=True))),
    "settings": (_nothing, _same(fr.settings_frame([]))),
    "settings-ack": (_nothing, _same(fr.settings_frame(ack=True))),
    "priority": (_nothing, _same(fr.priority_frame(3, 1))),
    "empty-data": (_open, _same(fr.data_frame(1, b""))),
    "padding-only-data": (_open, _same(fr.data_frame(1, b"", pad=0))),
    "rst-closed": (_open_and_reset, _same(fr.rst_stream_frame(1, ErrorCode.CANCEL))),
    "empty-continuation": (_start_block, _same(fr.continuation_frame(1, b"", end_headers=False))),
    "unknown-type": (_nothing, _same(fr.frame(0x20, 0, 0))),
    "data-after-our-reset": (_reset_by_us, _same(fr.data_frame(1, b"in flight"))),
    "headers-after-our-reset": (_reset_by_us, _reopen_reset_stream),
    "headers-after-goaway": (_goaway, _new_streams),
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
def test_flood_of_idle_frames_is_cut_off(kind: str) -> None:
    setup, frames = FLOODS[kind]
    c = Client(_config())
    setup(c)
    c.send(frames(c, WITHIN))
    assert goaway_code(c.frames()) is None
    c.send(frames(c, BEYOND - WITHIN))
    g = goaway(c.frames())
    assert g is not None and g.error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert g.additional_data == b"too many frames that do no work"
    assert c.conn.terminated


def test_default_budget_cuts_a_ping_flood_within_bounded_frames() -> None:
    c = Client()
    for _ in range(20):
        c.send(fr.ping_frame(b"flooding") * 100)
        frames = c.frames()
        if c.conn.terminated:
            assert goaway_code(frames) == ErrorCode.ENHANCE_YOUR_CALM
            break
    assert c.conn.terminated  # 1,000 burst + ~0.1 per frame: gone before 2,000 pings


def test_idle_frames_among_real_traffic_refill_per_frame() -> None:
    c = Client(H2Config(idle_frame_burst=BURST, idle_frame_period_frames=1000))
    c.request(1)
    for _ in range(300):  # one PING per 20 frames: 1 spent, 20 * 0.05 refilled
        c.send(fr.window_update_frame(0, 1) * 19, fr.ping_frame(b"keepaliv"))
    assert goaway_code(c.frames()) is None


def test_pings_after_our_answers_are_refunded() -> None:
    """grpc-go's BDP estimator pings once per burst of DATA it receives: never a flood."""
    c = Client(_config())
    c.request(1)
    c.conn.send_headers(1, [(b":status", b"200")])
    for _ in range(10 * BURST):
        c.conn.send_data(1, b"event")
        c.send(fr.ping_frame(b"bdp-ping"))
    assert goaway_code(c.frames()) is None
    for _ in range(BURST):  # the same pings without answers in between run it dry
        c.send(fr.ping_frame(b"bdp-ping"))
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


def test_idle_budget_refills_with_the_callers_clock() -> None:
    now = [0.0]
    c = Client(H2Config(idle_frame_burst=10, idle_frame_period_seconds=1.0, clock=lambda: now[0]))
    for _ in range(100):  # 10 pings per second sustained is within budget
        now[0] += 0.1
        c.send(fr.ping_frame(b"keepaliv"))
    assert goaway_code(c.frames()) is None
    c.send(fr.ping_frame(b"keepaliv") * 12)  # a burst of 12 in no time is not
    assert goaway_code(c.frames()) == ErrorCode.ENHANCE_YOUR_CALM


def test_budget_values_are_checked() -> None:
    with pytest.raises(ValueError):
        H2Config(idle_frame_burst=-1)
    with pytest.raises(ValueError):
        H2Config(idle_frame_period_frames=0)
