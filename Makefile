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

# Debian packages, each set installed only when one of it is missing (hack/install-debian-packages.sh).
# PostgreSQL: server binaries only; the service tests run initdb and postgres in folders of their own.
POSTGRES_PACKAGES := postgresql postgresql-contrib
# Chromium: the pages' browser tests drive /usr/bin/chromium through Playwright for Python
# (Playwright's own browser download is never used).
CHROMIUM_PACKAGES := chromium fonts-dejavu-core
# The local node (containerd, runc, CNI plugins; iptables for the one DNAT to the apiserver;
# dnsmasq-base, the binary only, as the `dnsmasq` package would start a daemon) and images
# without Docker (buildah, umoci, debootstrap).
NODE_PACKAGES := containerd runc containernetworking-plugins iptables dnsmasq-base buildah umoci debootstrap

.PHONY: postgres
postgres: ## Install PostgreSQL server binaries from Debian if missing (tests start their own).
	hack/install-debian-packages.sh $(POSTGRES_PACKAGES)

.PHONY: chromium
chromium: ## Install Debian's Chromium if missing (the browser tests drive it through Playwright).
	hack/install-debian-packages.sh $(CHROMIUM_PACKAGES)

.PHONY: node-packages
node-packages: ## Install the node's and the image build's Debian packages if missing.
	hack/install-debian-packages.sh $(NODE_PACKAGES)

.PHONY: images
images: venv node-packages ## Build the operator and token service images with buildah (cached).
	hack/build-images.sh

.PHONY: lint
lint: venv ## ruff, mypy --strict and the import-linter contracts.
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy operator/apitoken_operator tokenservice/apitoken_service ctl/apitokenctl hack/localkube tests bench
	.venv/bin/lint-imports --no-cache

.PHONY: fmt
fmt: venv ## Format and autofix.
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

.PHONY: test
test: venv binaries postgres chromium node-packages lint ## Everything CI runs: lint, then every test tier.
	.venv/bin/pytest $(PYTEST_ARGS)

# make dev starts a node (and runs examples/04-workload on it) when root and not
# USE_EXISTING_CLUSTER; DEV_NODE=false skips it and the image build it needs.
DEV_NODE ?= $(if $(filter 0,$(shell id -u)),$(if $(filter 1 true yes,$(USE_EXISTING_CLUSTER)),false,true),false)

.PHONY: dev
dev: venv cluster-binaries $(if $(filter true,$(DEV_NODE)),images) ## Start the local system in the foreground (Ctrl-C stops and cleans up).
	$(PY) -m localkube $(if $(filter true,$(DEV_NODE)),--node,--no-node)

.PHONY: bench
bench: venv postgres ## Run the benchmarks and print the tables for docs/benchmarks.md.
	$(PY) -m bench

.PHONY: bench-unknown-refresh
bench-unknown-refresh: venv postgres ## CPU of an unknown refresh token vs. a real refresh, in process (SQLite, PostgreSQL).
	$(PY) -m bench.unknown_refresh

.PHONY: bench-operator
bench-operator: venv cluster-binaries ## The operator at size: convergence vs. an asyncio baseline, memory, API writes, steady-state lateness, expiry, busiest second, restart (BENCH_OPERATOR_ARGS, see docs/benchmarks.md).
	$(PY) -m bench.operator_bench $(BENCH_OPERATOR_ARGS)

.PHONY: chaos
chaos: venv cluster-binaries ## The full chaos run: 50 SIGKILLs among 200 ApiTokens (make test runs the short one).
	CHAOS_KILLS=50 CHAOS_TOKENS=200 CHAOS_ACCESS_TOKEN_TTL=30 CHAOS_ROUNDS=3 .venv/bin/pytest tests/chaos --timeout 3600 --log-cli-level=WARNING $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove local state (.venv, .tools, .dev). The binary cache stays.
	rm -rf .venv .tools .dev .pytest_cache .mypy_cache .ruff_cache
