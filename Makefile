# OLVM: `make run` starts the engine on this machine, `make test` runs lint + tests.
# The work is done by the scripts in scripts/; this file only names it.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=
export PYTEST_ARGS

.PHONY: help setup run test lint format stop clean lab

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## install system packages, .venv and node_modules (idempotent)
	@scripts/setup.sh

run: setup ## migrate, seed demo data, start web + worker + beat (Ctrl-C stops all)
	@scripts/run.sh

lab: setup ## as root: 2 lab hosts (namespaces + libvirtd) registered in the engine (idempotent)
	@.venv/bin/python manage.py lab up --hosts 2

test: setup ## ruff, Django checks and pytest on PostgreSQL (PYTEST_ARGS=... for more)
	@scripts/test.sh

lint: setup ## ruff check + format check only
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup ## ruff: fix what can be fixed and format the code
	@.venv/bin/ruff check --fix . && .venv/bin/ruff format .

stop: ## stop the Redis/PostgreSQL that these scripts started (if any)
	@scripts/ensure_services.sh stop

clean: ## remove the local state in var/ (database, keys, static files)
	rm -rf var/
