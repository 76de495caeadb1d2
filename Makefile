# hksz-gateway — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint fmt typecheck pytest bench clean

# The compiled matcher core is built by the install: rebuild when its source changes.
$(STAMP): pyproject.toml gateway/classify/_native.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "hksz-gateway needs Python 3.11+ (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup

# The Prometheus Operator's form of the alert rules (kept equal by tests/deploy).
OPERATOR_RULE := deploy/kubernetes/prometheus-operator/prometheusrule.yaml
$(OPERATOR_RULE): deploy/prometheus/alerts.yml $(STAMP)
	$(BIN)/python -c 'import sys, yaml; h = open(sys.argv[1]).read().split("apiVersion:")[0]; \
	  g = yaml.safe_load(open(sys.argv[2]))["groups"]; \
	  r = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", \
	       "metadata": {"name": "hksz-gateway", "labels": {"app.kubernetes.io/name": "hksz-gateway"}}, \
	       "spec": {"groups": g}}; \
	  open(sys.argv[1], "w").write(h + yaml.safe_dump(r, sort_keys=False, width=100, allow_unicode=True))' \
	  $@ deploy/prometheus/alerts.yml

bench: $(STAMP)
	$(BIN)/gateway bench classify
	$(BIN)/gateway bench proxy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
