# make demo   - the whole demo on the embedded default (installs first)
# make test   - the test suite (installs first)
# make lint   - ruff's lint and format checks (installs first)
PYTHON ?= python3.11
VENV   ?= .venv
# A CPU build here; on GPU nodes set TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: install demo test lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/run_demo.sh

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
