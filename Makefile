# acestep-viz: `make run` starts collector + dashboard + demo training; `make test` runs the tests.
# Both install what they need first, into the active virtual environment (or conda environment) if
# there is one, else into .venv here (created on first use; the system Python is never touched).
# Bring your own torch: if `import torch` works there it is kept; otherwise TORCH_SPEC is installed
# (torch==2.13.0 by default; override, e.g. `make run TORCH_SPEC=torch==2.5.1`).
BASE_PYTHON ?= python3
ifneq ($(strip $(VIRTUAL_ENV)$(CONDA_PREFIX)),)
PYTHON ?= python
ENV_READY :=
else
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
ENV_READY := $(VENV)/bin/python
endif
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test
CACHE := $(CURDIR)/.cache
STAMP := $(CACHE)/install-$(EXTRAS)$(subst /,_,$(abspath $(PYTHON))).stamp
export NUMBA_CACHE_DIR ?= $(CACHE)/numba
PYTEST_ARGS ?=

.PHONY: install run test browser lint bench soak wheel clean

install: $(STAMP)

ifneq ($(ENV_READY),)
# Debian and Ubuntu ship venv separately (python3-venv); as root it is installed, else the message says how.
$(VENV)/bin/python:
	@$(BASE_PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(BASE_PYTHON) -m venv $(VENV); \
	  else echo "cannot create $(VENV): install your Python's venv module (Debian/Ubuntu: sudo apt install python3-venv)," \
	    "or activate a virtual environment first"; exit 1; fi; }
	@echo "made $(VENV): acestep-viz and its packages are installed there ($(VENV)/bin/acestep-viz)"
endif

$(STAMP): setup.cfg pyproject.toml $(ENV_READY)
	@mkdir -p $(CACHE)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -e ".[$(EXTRAS)]"
	@touch $@

# Headless Chromium for the browser tests, from the system's packages (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "chromium not found: install Debian's 'chromium' package to run the browser tests"; fi; }

run: install
	$(PYTHON) -m acestep_viz up --demo

test: install browser
	@echo "environment: $$($(PYTHON) -c 'import sys; print(sys.prefix)') (acestep-viz and its packages are installed there)"
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: install
	$(PYTHON) -m ruff check acestep_viz collector dashboard trainer_plugin tests

bench: install
	$(PYTHON) tests/benchmarks/run_all.py

# Reliability at full size (~6 min): 100k bad frames, collector stopped 30 s / killed mid-run, kill -9
# durability, 8 publishers x 200 frames/s for 60 s; prints a table and writes soak-results.json.
soak: install
	$(PYTHON) tests/soak.py

# A wheel in dist/ (what `pip install .` installs): everything under acestep_viz, assets included.
wheel: install
	$(PYTHON) -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(CACHE) .pytest_cache build dist *.egg-info test-artifacts bench-results.json soak-results.json
