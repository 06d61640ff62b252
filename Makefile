# Everything runs from two local virtualenvs built from hash-pinned locks:
#   .venv     mapillaryd and its dev tools (requirements/lock.txt)
#   .venv-mt  the real mapillary_tools 0.14.7, the peer our tests and benchmarks compare against
PYTHON ?= python3
VENV := .venv
VENV_MT := .venv-mt
# .venv-dl  mapillary-downloader 0.12, the peer of the archive bench (python -m bench archive)
VENV_DL := .venv-dl
BIN := $(VENV)/bin
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: all venv venv-mt venv-dl demo test test-fast lint bench clean

all: test

$(VENV)/.stamp: requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --require-hashes -r requirements/lock.txt
	$(BIN)/pip install $(PIP_FLAGS) --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $@

$(VENV_MT)/.stamp: requirements/mapillary_tools.lock.txt
	$(PYTHON) -m venv $(VENV_MT)
	$(VENV_MT)/bin/pip install $(PIP_FLAGS) --require-hashes -r requirements/mapillary_tools.lock.txt
	touch $@

venv: $(VENV)/.stamp
venv-mt: $(VENV_MT)/.stamp

$(VENV_DL)/.stamp: requirements/mapillary_downloader.lock.txt
	$(PYTHON) -m venv $(VENV_DL)
	$(VENV_DL)/bin/pip install $(PIP_FLAGS) --require-hashes -r requirements/mapillary_downloader.lock.txt
	touch $@

venv-dl: $(VENV_DL)/.stamp

## demo: the daemon's main job against the built-in sandbox, on temporary directories
demo: venv
	$(BIN)/mapillaryd demo

## test: the whole suite (unit, integration, end-to-end, mapillary_tools interop)
test: venv venv-mt
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

## test-fast: unit and integration tests only
test-fast: venv
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow and not mapillary_tools" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy --strict daemon

## bench: mapillaryd against mapillary_tools: upload on the same sandbox, then the processing stage;
##        then peak RSS streaming a 4 GiB video upload (VIDEO_BENCH_ARGS="--size-gb 0.5" for less)
bench: venv venv-mt venv-dl
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench process $(PROCESS_BENCH_ARGS)
	$(BIN)/python -m bench video $(VIDEO_BENCH_ARGS)
	$(BIN)/python -m bench archive $(ARCHIVE_BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV_MT) $(VENV_DL) .mypy_cache .ruff_cache out
