# Thin targets; each sets up what it needs (scripts/setup.sh is fast once done).
VENV ?= .venv
BIN := $(VENV)/bin
PARAMS ?= params/default.yaml

.PHONY: setup study test test-slow lint format bench lab clean

setup:
	@bash scripts/setup.sh

study: setup
	$(BIN)/wavecoder run $(PARAMS)

test: setup
	$(BIN)/ruff check lib tests bench notebooks
	$(BIN)/ruff format --check lib tests bench
	$(BIN)/python -m pytest -q -m "not slow"

# Minutes-long end-to-end runs (every stage notebook, full reference sets); CI runs them too.
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check lib tests bench notebooks

format: setup
	$(BIN)/ruff format lib tests bench
	$(BIN)/ruff check --fix lib tests bench notebooks

bench: setup
	$(BIN)/python bench/coreset.py

# as root (containers) Jupyter refuses to start without --allow-root
lab: setup
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean:
	rm -rf outputs/smoke .pytest_cache .ruff_cache
