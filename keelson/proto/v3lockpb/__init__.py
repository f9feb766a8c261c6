"""Generated protobuf modules for v3lockpb."""
