# Thin targets; each sets up what it needs (scripts/setup.sh is fast once done).
VENV ?= .venv
BIN := $(VENV)/bin
PARAMS ?= params/default.yaml

.PHONY: setup lock study test test-slow lint format bench lab clean same-bytes

# .venv from locks/cpu.txt (or locks/cuda.txt where a CUDA GPU is), hashes checked
setup:
	@bash scripts/setup.sh

# refresh the locks and environment.yml from pyproject.toml (LOCK_UPGRADE=0: change the least)
lock:
	@bash scripts/lock.sh

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

# two clean clones in different folders: byte-identical stage 01-03 outputs (issue: same study
# everywhere); PARAMS=params/default.yaml for the full default
same-bytes:
	bash scripts/same_bytes.sh $(if $(filter command line,$(origin PARAMS)),$(PARAMS),params/smoke.yaml)

# every benchmark, each in its quick mode where it has one
bench: setup
	$(BIN)/python bench/coreset.py --n 20000 --k 200
	$(BIN)/python bench/execution.py
	$(BIN)/python bench/finetune_throughput.py
	$(BIN)/python bench/llm_throughput.py

# as root (containers) Jupyter refuses to start without --allow-root
lab: setup
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean:
	rm -rf outputs/smoke .pytest_cache .ruff_cache
