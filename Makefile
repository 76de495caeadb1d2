# hksz-gateway — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The locks (docs/operations.md "Installing"): every dependency pinned, with its files' hashes.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
# `make lock` keeps the pins it can; `make lock LOCK_ARGS=--upgrade` (or
# LOCK_ARGS='--upgrade-package aiohttp') moves them.
LOCK_ARGS ?=
PIP_COMPILE := CUSTOM_COMPILE_COMMAND='make lock' $(BIN)/pip-compile --quiet --generate-hashes \
  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)

.PHONY: run test lint fmt typecheck pytest bench lock clean

# The environment is the dev lock, every file hash-checked, then the gateway itself without
# resolving anything. The install builds the compiled matcher core and table renderer:
# rebuild when their sources, pyproject.toml or a lock changes.
$(STAMP): pyproject.toml $(LOCK) $(DEV_LOCK) gateway/classify/_native.c gateway/classify/formats/tables/_rows.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "hksz-gateway needs Python 3.11+ (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
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
	$(BIN)/gateway bench stages

# Regenerates both locks from pyproject.toml; the dev lock keeps the runtime lock's pins
# (--constraint), so the tests run what the image ships. Commit both: tests/deploy checks
# that they cover pyproject.toml.
lock: $(STAMP)
	$(PIP_COMPILE) --output-file $(LOCK) pyproject.toml
	$(PIP_COMPILE) --extra dev --constraint $(LOCK) --output-file $(DEV_LOCK) pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
