"""CPU per raft message in the peer transport: encode+frame, frame parsing+decode, loopback.

    python -m bench.transport_codec [--loopback N] [--repeat R]

Not a test: it prints figures. The messages are the ones a 3-member cluster exchanges for
one client ``put`` at a time: MsgApp carrying one 300-byte entry, its MsgAppResp, the empty
MsgApp that carries the new commit index, and MsgHeartbeat/MsgHeartbeatResp.

* ``encode``: ``time.process_time()`` µs per message for what ``Transport.send`` does to
  turn a ``Message`` into the bytes it writes (codec encode plus the frame header).
* ``decode``: µs per message for what the MESSAGES receive path does with bytes that have
  arrived: split the frames (``FrameBuffer``, one chunk holding one frame, as on an idle
  one-client cluster) and decode each body; ``decode only`` is ``decode_message`` alone,
  and ``read_frame`` is the old per-frame path (two ``readexactly`` on a ``StreamReader``)
  kept for comparison.
* ``loopback``: two real ``Transport`` objects in this process on 127.0.0.1 (port 0); one
  sends N messages one at a time, waiting for each delivery before sending the next, so
  every message crosses the whole send path, the kernel and the whole receive path, event
  loop included. Figures are CPU µs (both ends together, plus this loop's own wait for the
  delivery) and wall µs per message; both transports share one process and one core.

Each figure is the best of ``--repeat`` runs, with the spread (worst) beside it: the
machine is shared, so the minimum is the figure to compare between versions.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable

from keelson.raft.types import Entry, EntryType, Message, MessageType
from keelson.transport.codec import decode_message, encode_message
from keelson.transport.frames import FrameKind, frame, read_frame
from keelson.transport.transport import Transport

try:  # the sans-I/O frame splitter (absent before it was written)
    from keelson.transport.frames import FrameBuffer
except ImportError:  # pragma: no cover - only when benchmarking an older tree
    FrameBuffer = None  # type: ignore[assignment,misc]

try:
    from keelson.transport.codec import encode_message_frame
except ImportError:  # pragma: no cover
    encode_message_frame = None  # type: ignore[assignment]

CAP = 64 * 1024 * 1024


def put_messages() -> dict[str, Message]:
    """The messages of one replicated put on a 3-member cluster (leader 1)."""
    entry = Entry(term=5, index=1001, type=EntryType.NORMAL, data=b"v" * 300)
    return {
        "MsgApp+300B": Message(
            MessageType.APP,
            to=2,
            frm=1,
            term=5,
            log_term=5,
            index=1000,
            entries=(entry,),
            commit=1000,
        ),
        "MsgAppResp": Message(MessageType.APP_RESP, to=1, frm=2, term=5, index=1001),
        "MsgApp(commit)": Message(
            MessageType.APP, to=2, frm=1, term=5, log_term=5, index=1001, commit=1001
        ),
        "MsgHeartbeat": Message(MessageType.HEARTBEAT, to=2, frm=1, term=5, commit=1001),
        "MsgHeartbeatResp": Message(MessageType.HEARTBEAT_RESP, to=1, frm=2, term=5),
    }


def per_call_us(fn: Callable[[], object], n: int) -> float:
    """CPU µs per call of ``fn`` over ``n`` calls."""
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def best(samples: list[float]) -> str:
    return f"{min(samples):7.2f} ({max(samples):6.2f})"


def encode_fn(m: Message) -> Callable[[], object]:
    if encode_message_frame is not None:
        return lambda: encode_message_frame(m)
    return lambda: frame(FrameKind.MESSAGE, encode_message(m))


def parse_fn(data: bytes) -> Callable[[], object]:
    """Split one chunk holding one MESSAGE frame and decode it, as the receive path does."""
    if FrameBuffer is None:
        return lambda: None
    buf = FrameBuffer(CAP)

    def run() -> object:
        out = None
        for _kind, body in buf.feed(data):
            out = decode_message(body)
        return out

    return run


def read_frame_us(data: bytes, n: int) -> float:
    """CPU µs per frame through the old path: feed a StreamReader, ``read_frame``, decode."""

    async def main() -> float:
        reader = asyncio.StreamReader()
        start = time.process_time()
        for _ in range(n):
            reader.feed_data(data)
            _, body = await read_frame(reader, CAP)
            decode_message(body)
        return (time.process_time() - start) / n * 1e6

    return asyncio.run(main())


def codec_table(repeat: int, n: int) -> None:
    print(f"codec, µs CPU per message, best of {repeat} (worst), {n} calls each")
    header = f"{'message':<18}{'bytes':>6}{'encode':>17}{'decode':>17}"
    header += f"{'decode only':>17}{'read_frame':>17}"
    print(header)
    for name, m in put_messages().items():
        data = frame(FrameKind.MESSAGE, encode_message(m))
        body = data[5:]
        enc = [per_call_us(encode_fn(m), n) for _ in range(repeat)]
        dec = [per_call_us(parse_fn(data), n) for _ in range(repeat)]
        only = [per_call_us(functools.partial(decode_message, body), n) for _ in range(repeat)]
        old = [read_frame_us(data, n) for _ in range(repeat)]
        dec_s = best(dec) if FrameBuffer is not None else f"{'-':>17}"
        print(f"{name:<18}{len(data):>6}{best(enc):>17}{dec_s:>17}{best(only):>17}{best(old):>17}")


async def loopback(n: int, m: Message) -> tuple[float, float]:
    """(CPU µs, wall µs) per message sent 1 -> 2 one at a time over real transports."""
    loop = asyncio.get_running_loop()
    waiter: list[asyncio.Future[None]] = []

    def on_message(_: Message) -> None:
        waiter[0].set_result(None)

    a = Transport(1, 0xC1, lambda _: None)
    b = Transport(2, 0xC1, on_message)
    await a.start("127.0.0.1", 0)
    port = await b.start("127.0.0.1", 0)
    a.add_peer(2, [f"http://127.0.0.1:{port}"])
    try:
        async with asyncio.timeout(60 + n / 1000):  # one bound for the run, not per message
            for i in range(n + 200):  # the first 200 warm up (dial, handshake)
                if i == 200:
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                fut = loop.create_future()
                waiter[:] = [fut]
                a.send([m])
                await fut
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await a.stop()
        await b.stop()
    return cpu / n * 1e6, wall / n * 1e6


def loopback_table(repeat: int, n: int) -> None:
    print(f"\nloopback Transport pair, {n} messages one at a time, best of {repeat} (worst)")
    print(f"{'message':<18}{'CPU µs/msg':>17}{'wall µs/msg':>17}")
    msgs = put_messages()
    for name in ("MsgApp+300B", "MsgAppResp"):
        m = dataclasses.replace(msgs[name], to=2, frm=1)  # every one goes 1 -> 2 here
        runs = [asyncio.run(loopback(n, m)) for _ in range(repeat)]
        cpu = [c for c, _ in runs]
        wall = [w for _, w in runs]
        print(f"{name:<18}{best(cpu):>17}{best(wall):>17}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--loopback", type=int, default=20_000, help="0 skips it")
    args = parser.parse_args()
    codec_table(args.repeat, args.calls)
    if args.loopback:
        loopback_table(max(1, args.repeat // 2), args.loopback)


if __name__ == "__main__":
    main()
