"""keelson: a distributed, strongly consistent key-value store speaking etcd's v3 API."""
