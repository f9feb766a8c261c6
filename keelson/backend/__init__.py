"""keelson.backend: the LMDB environment a member keeps its applied state in."""

from keelson.backend.backend import (
    DEFAULT_MAP_SIZE,
    META_BUCKET,
    Backend,
    BackendError,
    ReadTxn,
    WriteTxn,
)

__all__ = ["DEFAULT_MAP_SIZE", "META_BUCKET", "Backend", "BackendError", "ReadTxn", "WriteTxn"]
