"""keelson.mvcc"""
