"""keelson.proto: the wire contract with etcd clients.

``.proto`` files wire-compatible with etcd 3.4 (packages ``etcdserverpb``, ``mvccpb``,
``authpb``, ``v3lockpb``, ``v3electionpb``), their generated modules (committed;
regenerate with ``python -m keelson.proto.generate``), and :mod:`keelson.proto.errors`,
the one table of client-visible errors.
"""
