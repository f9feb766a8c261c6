"""Client TLS on both gRPC front ends, in process: who may connect, and who the caller is.

A recording member stands behind a grpcio server and a native server, each bound with the
same :class:`~keelson.api.serving_tls.ServingTLS` (built by ``keelson serve``'s own
``_client_tls``), and grpcio clients call ``Range`` over TLS. Checked on both: a client
certificate from the trusted CA is accepted, one from a rogue CA or none at all is refused
at the handshake; the identity the member receives is the token when one is sent, else the
certificate's Common Name (:class:`~keelson.server.auth.CertificateName`); a plain-text
listener next to the TLS one passes no certificate name. The native server also closes a
TLS client that does not negotiate ALPN ``h2``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from keelson.api._status import identity_of
from keelson.api.grpc_server import build_grpc_server
from keelson.api.native import build_native_server
from keelson.api.native._protocol import tls_auth_context
from keelson.api.serving_tls import ServingTLS
from keelson.cli.config import parse_serve_args
from keelson.cli.main import _client_tls
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.server.auth import CertificateName
from keelson.testing.certs import CA, CertPair, make_ca
from keelson.testing.etcd import free_port


class RecordingMember:
    """Answers Range and records the identity each call carried."""

    def __init__(self) -> None:
        self.identities: list[object] = []

    def header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4)

    async def range(self, req: pb.RangeRequest, identity: object = None) -> pb.RangeResponse:
        self.identities.append(identity)
        return pb.RangeResponse(header=self.header(), count=1)


def _serving_tls(
    tmp: Path, ca: CA, server: CertPair, port: int, *, client_cert_auth: bool = True
) -> ServingTLS:
    url = f"https://127.0.0.1:{port}"
    flags = [
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--cert-file", server.cert_file, "--key-file", server.key_file,
        "--trusted-ca-file", ca.cert_file, "--data-dir", str(tmp / "data"),
    ]
    config = parse_serve_args([*flags, *(["--client-cert-auth"] if client_cert_auth else [])], {})
    tls = _client_tls(config)
    assert tls is not None and tls.addresses == frozenset({f"127.0.0.1:{port}"})
    return tls


def _credentials(ca: CA, client: CertPair | None) -> grpc.ChannelCredentials:
    root = Path(ca.cert_file).read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(root)
    return grpc.ssl_channel_credentials(
        root, Path(client.key_file).read_bytes(), Path(client.cert_file).read_bytes()
    )


async def _range(
    port: int, credentials: grpc.ChannelCredentials | None, token: str | None = None
) -> str:
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        metadata = (("token", token),) if token else None
        try:
            await pbg.KVStub(channel).Range(pb.RangeRequest(key=b"k"), metadata=metadata,
                                            timeout=5)
        except grpc.aio.AioRpcError as e:
            return e.code().name
        return "OK"


Builder = Callable[..., Any]
FRONT_ENDS: dict[str, Builder] = {"grpcio": build_grpc_server, "native": build_native_server}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_who_may_connect_and_who_the_caller_is(front_end: str, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    rogue_ca = make_ca(tmp_path, "rogue-ca")
    server_pair = ca.issue(tmp_path, "server", cn="server", client=False)
    alice = ca.issue(tmp_path, "alice", cn="alice", server=False)
    rogue = rogue_ca.issue(tmp_path, "rogue", cn="alice", server=False)
    tls_port, plain_port = free_port(), free_port()
    tls = _serving_tls(tmp_path, ca, server_pair, tls_port)

    async def main() -> None:
        member = RecordingMember()
        srv = FRONT_ENDS[front_end](
            member, [f"127.0.0.1:{tls_port}", f"127.0.0.1:{plain_port}"], tls=tls
        )
        await srv.start()
        try:
            assert await _range(tls_port, _credentials(ca, alice)) == "OK"
            assert await _range(tls_port, _credentials(ca, alice), token="tok.1") == "OK"
            assert member.identities == [CertificateName("alice"), "tok.1"]
            assert await _range(tls_port, _credentials(ca, rogue)) == "UNAVAILABLE"
            assert await _range(tls_port, _credentials(ca, None)) == "UNAVAILABLE"
            assert await _range(tls_port, None) == "UNAVAILABLE"  # plain text to TLS
            assert await _range(plain_port, None) == "OK"
            assert member.identities[2:] == [None]
        finally:
            await srv.stop(None)

    asyncio.run(asyncio.wait_for(main(), 100))


@pytest.mark.timeout(60)
def test_native_closes_a_tls_client_without_alpn_h2(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    server_pair = ca.issue(tmp_path, "server", cn="server", client=False)
    alice = ca.issue(tmp_path, "alice", cn="alice", server=False)
    port = free_port()
    tls = _serving_tls(tmp_path, ca, server_pair, port)

    def handshake(alpn: list[str]) -> tuple[str | None, bytes]:
        ctx = ssl.create_default_context(cafile=ca.cert_file)
        ctx.load_cert_chain(alice.cert_file, alice.key_file)
        ctx.set_alpn_protocols(alpn)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                chosen = s.selected_alpn_protocol()
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                s.sendall(bytes.fromhex("000000040000000000"))  # empty SETTINGS
                try:
                    return chosen, s.recv(9)
                except (ConnectionError, ssl.SSLError):
                    return chosen, b""

    async def main() -> None:
        srv = build_native_server(RecordingMember(), [f"127.0.0.1:{port}"], tls=tls)
        await srv.start()
        try:
            loop = asyncio.get_running_loop()
            chosen, first = await loop.run_in_executor(None, handshake, ["h2"])
            assert chosen == "h2" and first[3:4] == b"\x04"  # the server's SETTINGS frame
            chosen, first = await loop.run_in_executor(None, handshake, ["http/1.1"])
            assert chosen is None and first == b""  # closed: gRPC over TLS needs h2
        finally:
            await srv.stop(None)

    asyncio.run(asyncio.wait_for(main(), 50))


def test_tls_auth_context_has_grpcio_shape(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    alice = ca.issue(tmp_path, "alice", cn="alice", server=False)

    class FakeSSLObject:
        def __init__(self, verified: bool) -> None:
            self.verified = verified

        def getpeercert(self, binary_form: bool = False) -> Any:
            if not self.verified:
                return b"" if binary_form else {}
            if binary_form:
                return ssl.PEM_cert_to_DER_cert(Path(alice.cert_file).read_text())
            return {"subject": ((("organizationName", "keelson"),), (("commonName", "alice"),))}

    got = tls_auth_context(FakeSSLObject(True))  # type: ignore[arg-type]
    assert got["transport_security_type"] == [b"ssl"]
    assert got["x509_common_name"] == [b"alice"]
    assert got["x509_pem_cert"][0].startswith(b"-----BEGIN CERTIFICATE-----")
    assert tls_auth_context(FakeSSLObject(False)) == {  # type: ignore[arg-type]
        "transport_security_type": [b"ssl"]
    }


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...], auth: dict[str, list[bytes]]):
        self._metadata, self._auth = metadata, auth

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_identity_of_prefers_the_token() -> None:
    cert = {"x509_common_name": [b"alice"], "x509_pem_cert": [b"pem"]}
    no_cn = {"x509_pem_cert": [b"pem"]}
    plain = {"transport_security_type": [b"insecure"]}
    cases: list[tuple[Any, object]] = [
        (FakeContext((("token", "t.1"),), cert), "t.1"),
        (FakeContext((), cert), CertificateName("alice")),
        (FakeContext((), no_cn), CertificateName("")),
        (FakeContext((), plain), None),
        (FakeContext((("other", "x"),), {}), None),
    ]
    for context, expected in cases:
        assert identity_of(context) == expected


@pytest.mark.timeout(60)
def test_https_metrics_url_serves_version_over_tls(tmp_path: Path) -> None:
    from keelson.api.http import HttpEndpoints

    ca = make_ca(tmp_path, "ca")
    server_pair = ca.issue(tmp_path, "server", cn="server", client=False)
    alice = ca.issue(tmp_path, "alice", cn="alice", server=False)
    port = free_port()
    tls = _serving_tls(tmp_path, ca, server_pair, free_port())
    assert tls.http_context is not None

    def get(with_cert: bool) -> str:
        ctx = ssl.create_default_context(cafile=ca.cert_file)
        if with_cert:
            ctx.load_cert_chain(alice.cert_file, alice.key_file)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                    return data.decode()
        except (ConnectionError, ssl.SSLError):
            return "refused"

    async def main() -> None:
        http = HttpEndpoints(
            RecordingMember(), [("127.0.0.1", port)], 5.0,
            ssl_context=tls.http_context, tls_addresses=[("127.0.0.1", port)],
        )
        await http.start()
        try:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(None, get, True)
            assert answer.startswith("HTTP/1.1 200") and '"etcdserver":"3.4.0"' in answer
            # no client certificate: refused (an alert, or a close before any answer)
            assert await loop.run_in_executor(None, get, False) in ("refused", "")
        finally:
            await http.stop()

    asyncio.run(asyncio.wait_for(main(), 50))
