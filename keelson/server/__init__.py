"""keelson.server"""
