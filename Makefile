# Two commands for a fresh machine: `make run` (the app on http://127.0.0.1:7860) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: run test lint format bench clean browser-deps

$(RUNTIME): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(DEV): $(RUNTIME) requirements-dev.txt requirements-scale.txt requirements-lxt.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-lxt.txt
	touch $@

run: $(RUNTIME)
	GRADIO_ANALYTICS_ENABLED=False $(PY) app.py

browser-deps:
	@bash scripts/browser_deps.sh

test: $(DEV) browser-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest

lint: $(DEV)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(DEV)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: $(DEV)
	HF_HUB_OFFLINE=1 $(PY) -m vit_core bench --model timm:vit_small_patch16_224 --json
	HF_HUB_OFFLINE=1 $(PY) -m vit_core bench --model timm:vit_base_patch16_224 --json
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_app.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts
