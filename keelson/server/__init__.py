"""keelson.server: one cluster member (raft loop, WAL, apply to mvcc/leases, etcd's API).

``EtcdServer(MemberConfig)`` is the object keelson.api calls; ``member.run_member`` /
``member.serve`` assemble a member process (transport + raft loop + injected gRPC server).
"""

from keelson.server.etcdserver import EtcdServer, MemberConfig

__all__ = ["EtcdServer", "MemberConfig"]
