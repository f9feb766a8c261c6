"""Generated protobuf modules for etcdserverpb."""
