# The stable entry points: bootstrap, test, lint, bench, demo (see README).
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
export PATH := $(ROOT)/.tools/bin:$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=
EXAMPLE ?= hello
# How the demo's events arrive: app (GitHub App webhook), workflow (OIDC token), redis.
FRONT_DOOR ?= app

.PHONY: bootstrap test drills soak lint format bench demo schema chart-docs clean worker-image worker-base

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The fault drills alone (they are also part of make test).
drills: bootstrap
	@$(VENV)/bin/python -m pytest tests/drills $(PYTEST_ARGS)

# The soak (tests/drills/test_soak.py): 300 PR events over 10 minutes with random pool kills
# and one Redis failover, about 15-20 minutes in all; make test runs a 1-minute version of it.
soak: bootstrap
	@K8SEE_SOAK_EVENTS=300 K8SEE_SOAK_SECONDS=600 \
		$(VENV)/bin/python -m pytest tests/drills/test_soak.py $(PYTEST_ARGS)

lint: bootstrap
	@$(VENV)/bin/ruff format --check k8see sandbox tests
	@$(VENV)/bin/ruff check k8see sandbox tests
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports

format: bootstrap
	@$(VENV)/bin/ruff format k8see sandbox tests
	@$(VENV)/bin/ruff check --fix k8see sandbox tests

bench: bootstrap
	@$(VENV)/bin/python -m tests.benchmarks

demo: bootstrap
	@$(VENV)/bin/k8see demo --example $(EXAMPLE) --front-door $(FRONT_DOOR) $(if $(KEEP),--keep,)

schema: bootstrap
	@$(VENV)/bin/k8see schema > config/k8s-ee.schema.json

# The charts' READMEs: their values tables are generated from values.yaml (helm-docs).
chart-docs: bootstrap
	@bash scripts/chart-docs.sh

# The worker image (workers/Dockerfile) with buildah; BASE_IMAGE, IMAGE, PLATFORM overridable.
worker-image: bootstrap
	@bash workers/build-image.sh

# A Debian bookworm base from deb.debian.org, for hosts without an image registry (root).
worker-base:
	@bash workers/base-image.sh

clean:
	rm -rf .venv .tools .sandbox
