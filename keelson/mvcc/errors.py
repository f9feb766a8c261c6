"""The errors the revisioned key space raises, each with etcd's exact message as its ``str``.

Theory of operation. Every failure a client can cause in ``keelson.mvcc`` is one of these
classes; the API layer maps the class to a gRPC status. Two of them (``CompactedError`` and
``FutureRevisionError``) carry mvcc's own message; etcd's rpctypes present them to clients
with an ``etcdserver: `` prefix, which ``client_message`` returns.
"""

from __future__ import annotations


class MvccError(Exception):
    """Base of every error keelson.mvcc raises for a bad request."""

    message = "mvcc: error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.message)

    def client_message(self) -> str:
        """The message etcd shows a client for this error."""
        return str(self)


class CompactedError(MvccError):
    """The requested revision is older than the compact revision."""

    message = "mvcc: required revision has been compacted"

    def client_message(self) -> str:
        return "etcdserver: " + str(self)


class FutureRevisionError(MvccError):
    """The requested revision is newer than the current revision."""

    message = "mvcc: required revision is a future revision"

    def client_message(self) -> str:
        return "etcdserver: " + str(self)


class KeyNotFoundError(MvccError):
    """A put with ignore_value or ignore_lease names a key that does not exist."""

    message = "etcdserver: key not found"


class ValueProvidedError(MvccError):
    """A put sets ignore_value and also gives a value."""

    message = "etcdserver: value is provided"


class LeaseProvidedError(MvccError):
    """A put sets ignore_lease and also gives a lease."""

    message = "etcdserver: lease is provided"


class DuplicateKeyError(MvccError):
    """A txn writes the same key twice (put/put or put inside a deleted range)."""

    message = "etcdserver: duplicate key given in txn request"


class LeaseNotFoundError(MvccError):
    """A put attaches a lease the lessor does not know."""

    message = "etcdserver: requested lease not found"


class EmptyKeyError(MvccError):
    """A request names the empty key."""

    message = "etcdserver: key is not provided"


class WatcherDuplicateIdError(MvccError):
    """A watch asks for a watch id already in use on its stream."""

    message = "mvcc: duplicate watch ID provided on the WatchStream"


class WatcherNotFoundError(MvccError):
    """A cancel names a watch id that does not exist on its stream."""

    message = "mvcc: watcher does not exist"


class StoreClosedError(MvccError):
    """The store was closed."""

    message = "mvcc: closed"


class WatcherEmptyRangeError(MvccError):
    """A watch names a range whose end is not after its key."""

    message = "mvcc: watcher range is empty"
