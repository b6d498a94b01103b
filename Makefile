PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BACKEND ?= local

.PHONY: run test unit integration lint bench bench-fair bench-latency bench-growth chaos-smoke chaos skew-table clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kvraft up --nodes 3

test: lint
	sh scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	sh scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q tests/integration

# ruff on every package; mypy on kvraft/, kvraft_cmd/ and api/ (pyproject.toml [tool.mypy] lists them)
lint: $(STAMP)
	$(BIN)/ruff check kvraft kvraft_cmd api tests bench chaos
	$(BIN)/ruff format --check kvraft kvraft_cmd api tests bench chaos
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.compare

# the fair cells of issue 16 alone (kvraft vs etcd at equal guarantees, loadgen and hey/wrk)
bench-fair: $(STAMP)
	$(BIN)/python -m bench.compare --cells 'put-*,get-*,ycsb-*'

bench-latency: $(STAMP)
	$(BIN)/python -m bench.latency

bench-growth: $(STAMP)
	$(BIN)/python -m bench.growth

chaos-smoke: $(STAMP)
	sh scripts/install-test-deps.sh
	$(BIN)/python -m chaos.run smoke

chaos: $(STAMP)
	sh scripts/install-test-deps.sh
	$(BIN)/python -m chaos.run full --backend $(BACKEND)

.PHONY: chaos-register-negative
chaos-register-negative: $(STAMP)
	sh scripts/install-test-deps.sh
	$(BIN)/python -m chaos.run register-negative

skew-table: $(STAMP)
	$(BIN)/python -m chaos.skew_table

clean:
	rm -rf $(VENV) data .pytest_cache

# schemathesis --checks all, every phase, against a real 3-node cluster: a random seed and
# 1,000 examples per operation (make test runs the same with a fixed seed and 300)
.PHONY: api-fuzz
api-fuzz: $(STAMP)
	$(BIN)/python -m tests.harness.apifuzz --max-examples 1000 $(if $(SEED),--seed $(SEED))

.PHONY: image compose-test

# the Docker image, also where no registry can be reached (see scripts/build-image.sh)
image:
	sh scripts/install-test-deps.sh debootstrap
	sh scripts/build-image.sh

# the container tiers alone: compose for real, chaos smoke against containers, k8s manifests
compose-test: $(STAMP)
	sh scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q tests/integration/test_docker_compose.py \
		tests/integration/test_chaos_compose.py tests/integration/test_k8s.py
