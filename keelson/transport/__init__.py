"""keelson.transport"""
