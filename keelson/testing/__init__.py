"""keelson.testing"""
