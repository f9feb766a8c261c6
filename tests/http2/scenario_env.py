"""The interaction environment behind tests/http2/testdata/*.txt (datadriven format).

One scenario file drives one server ``H2Connection`` with a scripted client. Commands:

    new [max_concurrent_streams=N initial_window_size=N ...]   fresh connection (H2Config fields)
    client preface [SETTING=value ...]         preface + SETTINGS (names as in SettingCode)
    client settings SETTING=value ...          a SETTINGS frame
    client settings-ack
    client headers stream=N [end_stream] [split=K] [pad=P] [priority=D]
        optional input lines "name: value" (default: a gRPC request)
    client data stream=N (len=L | input text) [end_stream] [pad=P]
    client window-update stream=N inc=I
    client rst stream=N [code=NAME]
    client ping [ack] [data=8chars]
    client priority stream=N dep=D
    client goaway [last=N] [code=NAME]
    client raw type=T [flags=F] [stream=N] [hex=...]
    server headers stream=N [end_stream] [cached]   input "name: value" (default :status 200)
    server data stream=N len=L [end_stream]
    server trailers stream=N                         input "name: value" (default grpc-status 0)
    server reset stream=N [code=NAME]
    server goaway [last=N] [code=NAME]
    server ack stream=N n=I                          acknowledge_received_data
    server ping
    state                                            open streams, windows, queues

Every command prints what came back: events (``event ...``) for client commands, then the
frames the server queued (``frame ...``, header blocks decoded with the client's HPACK
decoder). Server commands that are refused print ``error <Exception>: message``.
"""

from __future__ import annotations

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from keelson.http2 import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    H2Config,
    H2Connection,
    H2Error,
    HeaderBlock,
    PingAck,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    SettingCode,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from keelson.http2 import _frames as fr
from keelson.testing.datadriven import TestCase
from tests.http2.wire import PREFACE, REQUEST, parse_frames

CACHED: dict[bool, HeaderBlock] = {
    False: HeaderBlock.static(((b":status", b"200"), (b"content-type", b"application/grpc"))),
    True: HeaderBlock.static(((b"grpc-status", b"0"),), trailers=True),
}


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return hex(code)


def _setting_name(code: int) -> str:
    try:
        return SettingCode(code).name
    except ValueError:
        return hex(code)


def _fields(headers: object) -> str:
    return " ".join(
        f"{n.decode('latin-1')}={v.decode('latin-1')}" for n, v in headers  # type: ignore[attr-defined]
    )


def format_event(e: Event) -> str:
    if isinstance(e, RequestReceived):
        return f"event RequestReceived stream={e.stream_id} {_fields(e.headers)}"
    if isinstance(e, TrailersReceived):
        return f"event TrailersReceived stream={e.stream_id} {_fields(e.headers)}"
    if isinstance(e, DataReceived):
        return (f"event DataReceived stream={e.stream_id} len={len(e.data)}"
                f" flow={e.flow_controlled_length}")
    if isinstance(e, StreamEnded):
        return f"event StreamEnded stream={e.stream_id}"
    if isinstance(e, StreamReset):
        side = "remote" if e.remote else "local"
        return f"event StreamReset stream={e.stream_id} code={_code_name(e.error_code)} {side}"
    if isinstance(e, WindowUpdated):
        return f"event WindowUpdated stream={e.stream_id} delta={e.delta}"
    if isinstance(e, RemoteSettingsChanged):
        changes = " ".join(f"{_setting_name(c)}:{o}->{n}" for c, o, n in e.changes)
        return f"event RemoteSettingsChanged {changes}"
    if isinstance(e, SettingsAcknowledged):
        return "event SettingsAcknowledged " + " ".join(
            f"{_setting_name(c)}={v}" for c, v in e.settings)
    if isinstance(e, PingReceived):
        return f"event PingReceived data={e.data.decode('latin-1')}"
    if isinstance(e, PingAck):
        return f"event PingAck data={e.data.decode('latin-1')}"
    if isinstance(e, ConnectionTerminated):
        side = "remote" if e.remote else "local"
        return (f"event ConnectionTerminated code={_code_name(e.error_code)}"
                f" last={e.last_stream_id} {side} debug={e.additional_data.decode('latin-1')!r}")
    raise AssertionError(f"unexpected event {e!r}")


class H2Env:
    """Holds the connection under test and the client's HPACK state between commands."""

    def __init__(self) -> None:
        self.conn = H2Connection()
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.pending_block = b""

    def handle(self, tc: TestCase) -> str:
        if tc.cmd == "new":
            return self._new(tc)
        if tc.cmd == "client":
            wire = self._client_bytes(tc)
            lines = [format_event(e) for e in self.conn.receive_data(wire)]
            return "\n".join(lines + self._drain())
        if tc.cmd == "server":
            try:
                self._server(tc)
            except H2Error as err:
                return "\n".join([f"error {type(err).__name__}: {err}", *self._drain()])
            return "\n".join(self._drain())
        if tc.cmd == "state":
            return self._state()
        raise AssertionError(f"{tc.pos}: unknown command {tc.cmd}")

    # ---------------------------------------------------------------- commands

    def _new(self, tc: TestCase) -> str:
        kwargs = {a.key: int(a.vals[0]) for a in tc.args}
        self.conn = H2Connection(H2Config(**kwargs))  # type: ignore[arg-type]
        self.encoder, self.decoder = Encoder(), Decoder()
        return "\n".join(self._drain())

    def _int(self, tc: TestCase, key: str, default: int | None = None) -> int:
        arg = tc.arg(key)
        if arg is None:
            if default is None:
                raise AssertionError(f"{tc.pos}: missing {key}=")
            return default
        value = arg.vals[0]
        if value.isdigit():
            return int(value)
        return int(ErrorCode[value]) if value in ErrorCode.__members__ else int(value, 0)

    def _headers_input(self, tc: TestCase, default: tuple[tuple[bytes, bytes], ...]
                       ) -> list[tuple[bytes, bytes]]:
        if not tc.input.strip():
            return list(default)
        out = []
        for line in tc.input.splitlines():
            name, _, value = line.partition(": ")
            out.append((name.encode("latin-1"), value.encode("latin-1")))
        return out

    def _settings_args(self, tc: TestCase) -> list[tuple[int, int]]:
        pairs = []
        for a in tc.args[1:]:
            code = SettingCode[a.key] if a.key in SettingCode.__members__ else int(a.key, 0)
            pairs.append((int(code), int(a.vals[0])))
        return pairs

    def _client_bytes(self, tc: TestCase) -> bytes:
        what = tc.args[0].key
        end = tc.arg("end_stream") is not None
        if what == "preface":
            return PREFACE + fr.settings_frame(self._settings_args(tc))
        if what == "settings":
            return fr.settings_frame(self._settings_args(tc))
        if what == "settings-ack":
            return fr.settings_frame(ack=True)
        sid = self._int(tc, "stream", 0)
        if what == "headers":
            block = self.encoder.encode(self._headers_input(tc, REQUEST))
            split = self._int(tc, "split", 1)
            pad = self._int(tc, "pad", -1) if tc.arg("pad") else -1
            priority = None
            if tc.arg("priority") is not None:
                priority = (self._int(tc, "priority"), False, 16)
            size = -(-len(block) // split)
            pieces = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
            wire = fr.headers_frame(sid, pieces[0], end_stream=end, end_headers=len(pieces) == 1,
                                    pad=pad, priority=priority)
            for i, piece in enumerate(pieces[1:], start=2):
                wire += fr.continuation_frame(sid, piece, end_headers=i == len(pieces))
            return wire
        if what == "data":
            data = bytes(self._int(tc, "len")) if tc.arg("len") else tc.input.encode()
            pad = self._int(tc, "pad") if tc.arg("pad") else -1
            return fr.data_frame(sid, data, end_stream=end, pad=pad)
        if what == "window-update":
            return fr.window_update_frame(sid, self._int(tc, "inc"))
        if what == "rst":
            return fr.rst_stream_frame(sid, self._int(tc, "code", int(ErrorCode.CANCEL)))
        if what == "ping":
            data = tc.arg("data").vals[0].encode() if tc.arg("data") else b"pingpong"
            return fr.ping_frame(data, ack=tc.arg("ack") is not None)
        if what == "priority":
            return fr.priority_frame(sid, self._int(tc, "dep"))
        if what == "goaway":
            return fr.goaway_frame(self._int(tc, "last", 0),
                                   self._int(tc, "code", int(ErrorCode.NO_ERROR)))
        if what == "raw":
            payload = bytes.fromhex(tc.arg("hex").vals[0]) if tc.arg("hex") else b""
            return fr.frame(self._int(tc, "type"), self._int(tc, "flags", 0), sid, payload)
        raise AssertionError(f"{tc.pos}: unknown client frame {what}")

    def _server(self, tc: TestCase) -> None:
        what = tc.args[0].key
        conn = self.conn
        sid = self._int(tc, "stream", 0)
        end = tc.arg("end_stream") is not None
        if what == "headers":
            if tc.arg("cached") is not None:
                conn.send_headers(sid, CACHED[False], end_stream=end)
            else:
                conn.send_headers(sid, self._headers_input(tc, ((b":status", b"200"),)), end)
        elif what == "data":
            conn.send_data(sid, bytes(self._int(tc, "len")), end_stream=end)
        elif what == "trailers":
            if tc.arg("cached") is not None:
                conn.send_trailers(sid, CACHED[True])
            else:
                conn.send_trailers(sid, self._headers_input(tc, ((b"grpc-status", b"0"),)))
        elif what == "reset":
            conn.reset_stream(sid, ErrorCode(self._int(tc, "code", int(ErrorCode.CANCEL))))
        elif what == "goaway":
            last = self._int(tc, "last") if tc.arg("last") else None
            conn.goaway(ErrorCode(self._int(tc, "code", 0)), last)
        elif what == "ack":
            conn.acknowledge_received_data(sid, self._int(tc, "n"))
        elif what == "ping":
            conn.ping(b"srv-ping")
        else:
            raise AssertionError(f"{tc.pos}: unknown server action {what}")

    def _state(self) -> str:
        conn = self.conn
        lines = [f"open={conn.open_streams} drained={conn.drained} terminated={conn.terminated}"
                 f" conn_send_window={conn._conn_out.size}"
                 f" conn_recv_window={conn._conn_in.available}"]
        for sid, s in conn._streams.items():
            lines.append(f"stream {sid} {s.state.value} send_window={s.outbound.size}"
                         f" recv_window={s.inbound.available} queued={s.queued_bytes}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- output

    def _drain(self) -> list[str]:
        data = self.conn.data_to_send()
        if data.startswith(b"HTTP/1.1"):
            return [f"http1 {data.splitlines()[0].decode()}"]
        lines = []
        for f in parse_frames(data):
            lines.append(self._format_frame(f))
        return [line for line in lines if line]

    def _format_frame(self, f: object) -> str:
        if isinstance(f, SettingsFrame):
            if "ACK" in f.flags:
                return "frame SETTINGS ack"
            body = " ".join(f"{_setting_name(k)}={v}" for k, v in sorted(f.settings.items()))
            return f"frame SETTINGS {body}"
        if isinstance(f, WindowUpdateFrame):
            return f"frame WINDOW_UPDATE stream={f.stream_id} inc={f.window_increment}"
        if isinstance(f, DataFrame):
            end = " end_stream" if "END_STREAM" in f.flags else ""
            return f"frame DATA stream={f.stream_id} len={len(f.data)}{end}"
        if isinstance(f, HeadersFrame | ContinuationFrame):
            kind = "HEADERS" if isinstance(f, HeadersFrame) else "CONTINUATION"
            end = " end_stream" if "END_STREAM" in f.flags else ""
            self.pending_block += f.data
            if "END_HEADERS" not in f.flags:
                return f"frame {kind} stream={f.stream_id}{end} (continued)"
            headers = self.decoder.decode(self.pending_block, raw=True)
            self.pending_block = b""
            return f"frame {kind} stream={f.stream_id}{end}: {_fields(headers)}"
        if isinstance(f, RstStreamFrame):
            return f"frame RST_STREAM stream={f.stream_id} code={_code_name(f.error_code)}"
        if isinstance(f, PingFrame):
            ack = " ack" if "ACK" in f.flags else ""
            return f"frame PING{ack} data={f.opaque_data.decode('latin-1')}"
        if isinstance(f, GoAwayFrame):
            return (f"frame GOAWAY last={f.last_stream_id} code={_code_name(f.error_code)}"
                    f" debug={f.additional_data.decode('latin-1')!r}")
        raise AssertionError(f"unexpected frame {f!r}")
