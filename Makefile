# The two commands that do all set-up on a fresh machine: `make run` and `make test`.
# The first interpreter that runs and is 3.11+ (pyenv shims exist for versions that do not run).
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { command -v $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench install deps-system clean schema asyncapi helm-sync-rules deploy-check

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "incidentd needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# The service's own bytecode, compiled ahead: where PYTHONDONTWRITEBYTECODE is set (as on CI
# machines and in many images) every start compiled all of service/ again (0.3 s of it).
install: $(STAMP)
	@$(BIN)/python -m compileall -q service > /dev/null

## make run: the service on the embedded broker (loopback), SQLite state, console pager.
run: install
	$(BIN)/incidentd run --embedded

## Debian packages the tests use (real Alertmanager and amtool, Prometheus, Chromium, Redis),
## and Redis started on 127.0.0.1:6379 if it does not answer PING there.
deps-system:
	@scripts/ensure-system-deps.sh

lint: install
	$(BIN)/ruff check service tests bench scripts
	$(BIN)/ruff format --check service tests bench scripts
	$(BIN)/mypy

## make test: everything the CI runs.
test: install deps-system lint
	$(BIN)/pytest -q -rs -n 3 --dist loadfile

bench: install
	$(BIN)/python -m bench.run

schema: install
	$(BIN)/python -c 'from service.emit.schema import write_schema; write_schema()'

## The AsyncAPI 3.0 document of every topic (docs/asyncapi.yaml), from the models and settings.
asyncapi: install
	$(BIN)/python -m service.emit.asyncapi

## The Helm chart carries a copy of rules/ (a chart reads only its own files).
helm-sync-rules:
	scripts/helm-lint.sh --sync-rules

## Lint and render the chart, validate the compose file (both also run in `make test`).
deploy-check: install
	scripts/helm-lint.sh -o /dev/null
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
