"""keelson.cli"""
