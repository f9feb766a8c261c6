"""keelson.auth"""
