# Two entry points for a fresh Debian/Ubuntu machine:
#   make run    set up, start Redis, a worker and the API, train the example
#   make test   set up, then format check, lint, type check and the test suite
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE ?= examples/digits-mlp.json

.PHONY: setup run test lint typecheck pytest openapi clean

setup:
	VENV=$(VENV) bash scripts/bootstrap.sh

run: setup
	VENV=$(VENV) bash scripts/run-demo.sh $(EXAMPLE)

test: setup lint typecheck pytest

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; report that as the broken suite it is.
pytest:
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; \
	exit $$status

openapi:
	$(BIN)/python -m service.openapi > openapi/openapi.json

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
