"""keelson.api"""
