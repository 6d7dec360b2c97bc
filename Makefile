# Developer entry points. Every target uses the virtualenv in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install up test lint typecheck layers codegen codegen-check bench clean

$(STAMP): pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) protos/codegen.py --check
	touch $(STAMP)

install: $(STAMP)  ## virtualenv with agentmesh and its dev tools

up: $(STAMP)  ## run the gateway and the reference agents on 127.0.0.1 (Ctrl-C stops them)
	$(VENV)/bin/agentmesh up

test: lint typecheck layers codegen-check  ## everything CI checks
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy services gateway tests protos/codegen.py

layers: $(STAMP)  ## the import layering contract in pyproject.toml ([tool.importlinter])
	$(VENV)/bin/lint-imports

codegen: $(STAMP)  ## regenerate protos/agentmesh/v1/*_pb2*.py(i) after editing a .proto
	$(PY) protos/codegen.py

codegen-check: $(STAMP)
	$(PY) protos/codegen.py --check

# As root it apt-gets what it lacks (h2load, nginx, redis-server); otherwise it
# names them and skips their part. About 11 minutes on 2 cores (docs/performance.md).
bench: $(STAMP)  ## the gateway against direct, a Python hop and nginx; prod settings, streams, scale
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .agentmesh .mypy_cache .pytest_cache .ruff_cache build *.egg-info
