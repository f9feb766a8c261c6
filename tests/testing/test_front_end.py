"""``keelson.testing.front_end``: KEELSON_GRPC_SERVER picks the in-process front end."""

from __future__ import annotations

import asyncio

import grpc.aio
import pytest

from keelson.api.native import NativeServer
from keelson.testing.fake_server import FakeServer
from keelson.testing.front_end import serve_grpc


@pytest.mark.parametrize(
    ("value", "kind"),
    [("", NativeServer), ("grpcio", grpc.aio.Server), ("native", NativeServer)],
)
def test_variable_picks_the_front_end(
    monkeypatch: pytest.MonkeyPatch, value: str, kind: type
) -> None:
    monkeypatch.setenv("KEELSON_GRPC_SERVER", value)

    async def build() -> None:  # grpc.aio wants a running loop
        srv, port = serve_grpc(FakeServer())
        stop = srv.stop
        try:
            assert isinstance(srv, kind)
            assert port > 0
        finally:
            await stop(None)

    asyncio.run(build())


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEELSON_GRPC_SERVER", "h2o")
    with pytest.raises(ValueError, match="KEELSON_GRPC_SERVER"):
        serve_grpc(FakeServer())
