# keelson: `make run` starts a single-member keelson on 127.0.0.1:2379, `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck importcheck proto deps-system clean bench bench-quick torture

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/keelson serve

# Debian's etcd 3.4 (server and etcdctl) for the compatibility tests.
deps-system:
	@if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q etcd-server etcd-client; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check keelson tests $(wildcard bench)

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict keelson/raft keelson/wal keelson/mvcc keelson/backend keelson/lease keelson/auth keelson/http2

importcheck: $(STAMP)
	$(VENV)/bin/lint-imports

proto: $(STAMP)
	$(PY) -m keelson.proto.generate

test: $(STAMP) deps-system lint typecheck importcheck
	$(PY) -m pytest -q tests
	KEELSON_GRPC_SERVER=grpcio $(PY) -m pytest -q tests/api tests/clients
	$(PY) -m pytest -q -m torture tests/torture

# The fault torture suite's short schedule (about 3.5 minutes; also the last step of `make test`):
# real members, faults, checkers.
# Longer: $(PY) -m tests.torture --time 600 --seed S [--nodes 5]; see tests/torture/README.md.
torture: $(STAMP)
	$(PY) -m pytest -q -m torture tests/torture

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis

# Side by side with etcd 3.4 using etcd's own load generator (built from Debian packages).
bench: $(STAMP) deps-system
	$(PY) -m bench.run

bench-quick: $(STAMP) deps-system
	$(PY) -m bench.run --quick
