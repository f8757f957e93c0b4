# Two commands do everything: `make serve` and `make test`. Each bootstraps .venv
# on first use with the gateway and its `local` extra (the embedded chat engine)
# and the Python client (clients/python, editable). llama-cpp-python is
# source-only on PyPI; it is built once with portable CPU flags (about 9
# minutes), after which pip's wheel cache makes set-up fast. The gateway itself
# installs without a compiler: `pip install .` leaves out `[local]`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sluice-installed
JS_STAMP := clients/js/node_modules/.sluice-installed
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: serve test lint typecheck unit setup system-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet \
		-e '.[dev,otel,local]' -e clients/python
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/sluice serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

system-deps:
	scripts/system-deps.sh

# the JavaScript client's test tools (ws, typescript), pinned by its package-lock.json
$(JS_STAMP): clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

unit: $(STAMP) system-deps $(JS_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache clients/js/node_modules
