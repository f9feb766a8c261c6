"""keelson.proto"""
