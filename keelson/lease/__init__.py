"""keelson.lease"""
