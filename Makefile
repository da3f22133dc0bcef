# apitoken-operator: every dependency is installed from here, so a fresh machine needs only
# python3 (3.11+), Go (1.26+) and, for PostgreSQL, apt-get. See docs/development.md.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
UV := .tools/bin/uv
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never
export PYTHONPATH := $(CURDIR)/hack

PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The virtual environment is synced from uv.lock whenever the lock or pyproject.toml changes.
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups
	touch $@

.PHONY: venv
venv: .venv/.synced ## Create or update the virtual environment (.venv).

.PHONY: binaries
binaries: ## Build kube-apiserver, kube-controller-manager, etcd and helm if missing (cached).
	hack/build-binaries.sh >/dev/null

.PHONY: cluster-binaries
cluster-binaries: # What `make dev` needs: the control plane without helm.
	hack/build-binaries.sh etcd kube >/dev/null

.PHONY: postgres
postgres: ## Install PostgreSQL server binaries from Debian if missing (tests start their own).
	hack/install-postgres.sh

.PHONY: lint
lint: venv ## ruff, mypy --strict and the import-linter contracts.
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy operator/apitoken_operator tokenservice/apitoken_service hack/localkube tests bench
	.venv/bin/lint-imports --no-cache

.PHONY: fmt
fmt: venv ## Format and autofix.
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

.PHONY: test
test: venv binaries postgres lint ## Everything CI runs: lint, then every test tier.
	.venv/bin/pytest $(PYTEST_ARGS)

.PHONY: dev
dev: venv cluster-binaries ## Start the local system in the foreground (Ctrl-C stops and cleans up).
	$(PY) -m localkube

.PHONY: bench
bench: venv postgres ## Run the benchmarks and print the tables for docs/benchmarks.md.
	$(PY) -m bench

.PHONY: bench-operator
bench-operator: venv cluster-binaries ## The operator at size: convergence vs. an asyncio baseline, memory, API writes (BENCH_OPERATOR_ARGS).
	$(PY) -m bench.operator_bench $(BENCH_OPERATOR_ARGS)

.PHONY: chaos
chaos: venv cluster-binaries ## The full chaos run: 50 SIGKILLs among 200 ApiTokens (make test runs the short one).
	CHAOS_KILLS=50 CHAOS_TOKENS=200 .venv/bin/pytest tests/chaos --timeout 3600 $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove local state (.venv, .tools, .dev). The binary cache stays.
	rm -rf .venv .tools .dev .pytest_cache .mypy_cache .ruff_cache
