"""keelson.wal"""
