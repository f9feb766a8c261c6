"""Generated protobuf modules for v3electionpb."""
