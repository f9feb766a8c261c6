"""keelson.http2 as the server, the ``h2`` library as an independent client, bytes in memory.

A small echo application sits on the server side: it answers each request, once the request
body has ended, with the cached gRPC response headers, the body it received, and trailers.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings

from keelson.http2 import (
    ConnectionTerminated,
    DataReceived,
    H2Connection,
    HeaderBlock,
    PingReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)

GRPC_OK = HeaderBlock.static(((b":status", b"200"), (b"content-type", b"application/grpc")))
TRAILERS_OK = HeaderBlock.static(((b"grpc-status", b"0"),), trailers=True)
REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/etcdserverpb.KV/Put"),
    (b":authority", b"127.0.0.1:2379"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"5S"),
]

Fields = list[tuple[bytes, bytes]]
Response = tuple[Fields, bytes, Fields]


class EchoApp:
    """The application side: collects bodies, answers at END_STREAM, records events."""

    def __init__(self, server: H2Connection, ack: bool = True) -> None:
        self.server = server
        self.ack = ack
        self.bodies: dict[int, bytearray] = {}
        self.events: list[object] = []

    def handle(self, events: list[object]) -> None:
        for event in events:
            self.events.append(event)
            if isinstance(event, RequestReceived):
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, DataReceived):
                self.bodies[event.stream_id] += event.data
                if self.ack:
                    self.server.acknowledge_received_data(
                        event.stream_id, event.flow_controlled_length
                    )
            elif isinstance(event, StreamEnded):
                body = bytes(self.bodies[event.stream_id])
                self.server.send_headers(event.stream_id, GRPC_OK)
                self.server.send_data(event.stream_id, body)
                self.server.send_trailers(event.stream_id, TRAILERS_OK)


class Pair:
    def __init__(self, client_settings: dict[int, int] | None = None) -> None:
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if client_settings:
            self.client.local_settings = h2.settings.Settings(
                client=True, initial_values=client_settings
            )
        self.client.initiate_connection()
        self.server = H2Connection()
        self.app = EchoApp(self.server)
        self.client_events: list[h2.events.Event] = []

    def pump(self, rounds: int = 5000) -> None:
        """Exchange bytes until both sides are quiet."""
        for _ in range(rounds):
            to_server = self.client.data_to_send()
            if to_server:
                self.app.handle(self.server.receive_data(to_server))  # type: ignore[arg-type]
            to_client = self.server.data_to_send()
            if to_client:
                for event in self.client.receive_data(to_client):
                    self.client_events.append(event)
                    if isinstance(event, h2.events.DataReceived):
                        self.client.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
            if not to_server and not to_client:
                return
        raise AssertionError("no quiescence")

    def responses(self) -> dict[int, Response]:
        """Completed responses by stream id: (headers, body, trailers)."""
        out: dict[int, Response] = {}
        bodies: dict[int, bytes] = {}
        heads: dict[int, list[tuple[bytes, bytes]]] = {}
        for e in self.client_events:
            if isinstance(e, h2.events.ResponseReceived):
                heads[e.stream_id] = list(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
            elif isinstance(e, h2.events.TrailersReceived):
                out[e.stream_id] = (heads[e.stream_id], bodies.get(e.stream_id, b""),
                                    list(e.headers))
        return out


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def test_grpc_unary_round_trip_with_trailers() -> None:
    p = Pair()
    p.pump()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, REQUEST)
    p.client.send_data(sid, grpc_message(b"\x0a\x03foo\x12\x03bar"), end_stream=True)
    p.pump()
    assert any(isinstance(e, RequestReceived) for e in p.app.events)
    headers, body, trailers = p.responses()[sid]
    assert headers == [(b":status", b"200"), (b"content-type", b"application/grpc")]
    assert body == grpc_message(b"\x0a\x03foo\x12\x03bar")
    assert trailers == [(b"grpc-status", b"0")]
    assert any(isinstance(e, h2.events.StreamEnded) for e in p.client_events)
    assert p.server.open_streams == 0


def test_many_interleaved_streams() -> None:
    p = Pair()
    p.pump()
    sids = []
    for i in range(60):
        sid = p.client.get_next_available_stream_id()
        sids.append(sid)
        p.client.send_headers(sid, [*REQUEST, (b"x-call", str(i).encode())])
        if len(sids) % 20 == 0:  # stay under MAX_CONCURRENT_STREAMS
            for s in sids[-20:]:
                p.client.send_data(s, grpc_message(b"call %d" % s), end_stream=True)
            p.pump()
    responses = p.responses()
    assert sorted(responses) == sids
    assert all(body == grpc_message(b"call %d" % s) for s, (_, body, _) in responses.items())


def test_large_bodies_both_ways_under_flow_control() -> None:
    p = Pair({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 30000})
    p.pump()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, REQUEST)
    body = bytes(range(256)) * 12000  # 3 MB: several times every window involved
    sent = 0
    for _ in range(10_000):
        window = min(p.client.local_flow_control_window(sid), p.client.max_outbound_frame_size)
        if window > 0 and sent < len(body):
            chunk = body[sent : sent + window]
            sent += len(chunk)
            p.client.send_data(sid, chunk, end_stream=sent == len(body))
        p.pump()
        if sid in p.responses():
            break
    assert p.responses()[sid][1] == body


def test_client_reset_and_ping_and_settings_change() -> None:
    p = Pair()
    p.pump()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, REQUEST)
    p.client.send_data(sid, b"partial")
    p.pump()
    p.client.reset_stream(sid, error_code=8)
    p.client.ping(b"pingpong")
    p.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    p.pump()
    assert StreamReset(sid, 8, remote=True) in p.app.events
    assert PingReceived(b"pingpong") in p.app.events
    assert any(isinstance(e, h2.events.PingAckReceived) for e in p.client_events)
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in p.client_events)
    # A new stream after the change still works, with a 100-byte stream window.
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, REQUEST)
    p.client.send_data(sid, bytes(1000), end_stream=True)
    p.pump()
    assert p.responses()[sid][1] == bytes(1000)


def test_goaway_both_ways() -> None:
    p = Pair()
    p.pump()
    sid = p.client.get_next_available_stream_id()
    p.client.send_headers(sid, REQUEST)
    p.pump()
    p.server.goaway()
    p.pump()
    terminated = [e for e in p.client_events if isinstance(e, h2.events.ConnectionTerminated)]
    assert terminated and terminated[0].last_stream_id == sid and terminated[0].error_code == 0
    assert not p.server.drained  # stream 1 is still open (h2's client gives up on it)
    p.server.reset_stream(sid)
    assert p.server.drained
    p2 = Pair()
    p2.pump()
    p2.client.close_connection()
    p2.pump()
    assert any(isinstance(e, ConnectionTerminated) and e.remote for e in p2.app.events)
