"""keelson.mvcc: the revisioned key space (etcd 3.4's mvcc package)."""

from keelson.mvcc.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    MvccError,
    ValueProvidedError,
    WatcherDuplicateIdError,
    WatcherEmptyRangeError,
    WatcherNotFoundError,
)
from keelson.mvcc.keyvalue import Event, EventType, KeyValue
from keelson.mvcc.kvstore import KVStore
from keelson.mvcc.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    prefix_end,
)
from keelson.mvcc.revision import KEY_BUCKET, Revision
from keelson.mvcc.txn import Lessor, TxnRead, TxnWrite
from keelson.mvcc.watchable_store import WatchableStore
from keelson.mvcc.watcher import (
    AUTO_WATCH_ID,
    PROGRESS_WATCH_ID,
    WatchFilter,
    WatchResponse,
    WatchStream,
)

__all__ = [
    "KEY_BUCKET", "CompactedError", "Compare", "CompareResult", "CompareTarget",
    "DeleteRangeRequest", "DeleteRangeResponse", "DuplicateKeyError", "EmptyKeyError",
    "Event", "EventType", "FutureRevisionError", "KVStore", "KeyNotFoundError", "KeyValue",
    "LeaseNotFoundError", "LeaseProvidedError", "Lessor", "MvccError", "PutRequest",
    "PutResponse", "RangeRequest", "RangeResponse", "Revision", "SortOrder", "SortTarget",
    "TxnRead", "TxnRequest", "TxnResponse", "TxnWrite", "ValueProvidedError", "prefix_end",
    "AUTO_WATCH_ID", "PROGRESS_WATCH_ID", "WatchFilter", "WatchResponse", "WatchStream",
    "WatchableStore", "WatcherDuplicateIdError", "WatcherEmptyRangeError",
    "WatcherNotFoundError",
]
