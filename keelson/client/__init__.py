"""keelson.client"""
