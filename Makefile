# jobsched: `make run` starts a development node, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test host-tools lint unit trial chaos busy-test coverage screenshots proto clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

# A single node in development mode: process executor, in-memory state,
# gRPC on 127.0.0.1:50051, dashboard and REST API on http://127.0.0.1:8081
run: install
	$(BIN)/twistd -n --pidfile= jobsched --executor process --port 50051 --dashboard-port 8081

# Lints, prepares what the tests need from the host (host-tools: a Docker engine and a
# local test image, headless Chromium, promtool), then runs every test; exits non-zero
# on any failure, and when pytest finds no test (exit 5).
test: install lint host-tools
	cd tests && ../$(BIN)/pytest -q -ra

host-tools: install
	$(BIN)/python tests/docker_engine.py install
	$(BIN)/python tests/browser.py install
	$(BIN)/python tests/promtool.py install

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: install
	cd tests && ../$(BIN)/pytest -q unit

# Retake the dashboard screenshots in docs/screenshots (the browser tests take them).
screenshots: install
	$(BIN)/python tests/browser.py install
	cd tests && JOBSCHED_SCREENSHOTS=$(CURDIR)/docs/screenshots ../$(BIN)/pytest -q e2e/test_dashboard.py

# The same suite under trial (Twisted's own runner); it counts the same tests as pytest.
trial: install host-tools
	$(BIN)/python -m twisted.trial tests

# The long chaos run: MINUTES of random kills, pauses and cuts on fresh 3-node clusters,
# every invariant checked after each, then the SIGSTOP measurement (REPEATS per role and
# span); prints a JSON report, exits non-zero on any violation (docs/testing.md).
MINUTES ?= 10
REPEATS ?= 10
chaos: install
	$(BIN)/python -m tests.chaos.long --minutes $(MINUTES) --repeats $(REPEATS)

# The whole suite RUNS times in a row while two busy loops occupy the cores.
RUNS ?= 3
busy-test: install host-tools
	$(BIN)/python tests/busy.py --runs $(RUNS) -- $(BIN)/pytest -q -ra tests

# Line coverage of jobsched by the unit layer, then by every layer (unit, integration,
# e2e) together, node and CLI processes included (figures in docs/testing.md).
coverage: install
	$(BIN)/python tests/docker_engine.py install
	rm -f .coverage .coverage.*
	cd tests && COVERAGE_DATA_DIR=$(CURDIR) ../$(BIN)/coverage run --rcfile=../.coveragerc -m pytest -q unit
	$(BIN)/coverage combine --rcfile=.coveragerc -q
	$(BIN)/coverage report --rcfile=.coveragerc --format=total | sed 's/^/unit layer: /'
	rm -f .coverage .coverage.*
	cd tests && JOBSCHED_COVERAGE=1 COVERAGE_DATA_DIR=$(CURDIR) ../$(BIN)/coverage run --rcfile=../.coveragerc -m pytest -q unit integration e2e
	$(BIN)/coverage combine --rcfile=.coveragerc -q
	$(BIN)/coverage report --rcfile=.coveragerc

# Regenerate the committed gRPC/protobuf modules after editing proto/scheduler.proto.
proto: install
	$(BIN)/python -m grpc_tools.protoc --proto_path=jobsched/_proto=proto \
		--python_out=. --pyi_out=. --grpc_python_out=. proto/scheduler.proto

clean:
	rm -rf $(VENV) build *.egg-info twisted/plugins/dropin.cache
