"""Generated protobuf modules for mvccpb."""
