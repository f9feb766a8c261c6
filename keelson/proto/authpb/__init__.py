"""Generated protobuf modules for authpb."""
