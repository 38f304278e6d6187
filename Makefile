# jobsched: `make run` starts a development node, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test unit proto clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

# A single node in development mode: process executor, in-memory state,
# gRPC on 127.0.0.1:50051, dashboard and REST API on http://127.0.0.1:8081
run: install
	$(BIN)/twistd -n --pidfile= jobsched --executor process --port 50051 --dashboard-port 8081

# Prepares a Docker engine and a local test image (tests/docker_engine.py), then runs
# every test; exits non-zero on any failure.
test: install
	$(BIN)/python tests/docker_engine.py install
	cd tests && ../$(BIN)/pytest -q -ra

unit: install
	cd tests && ../$(BIN)/pytest -q unit

# Regenerate the committed gRPC/protobuf modules after editing proto/scheduler.proto.
proto: install
	$(BIN)/python -m grpc_tools.protoc --proto_path=jobsched/_proto=proto \
		--python_out=. --pyi_out=. --grpc_python_out=. proto/scheduler.proto

clean:
	rm -rf $(VENV) build *.egg-info twisted/plugins/dropin.cache
