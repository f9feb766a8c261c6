"""keelson.raft"""
