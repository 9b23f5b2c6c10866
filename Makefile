# acestep-viz: `make run` starts collector + dashboard + demo training; `make test` runs the tests.
# Both install what they need first. Bring your own torch: if `import torch` works it is kept;
# otherwise TORCH_SPEC is installed (CPU build 2.13.0 by default; override, e.g. TORCH_SPEC=torch).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test
CACHE := $(CURDIR)/.cache
STAMP := $(CACHE)/install-$(EXTRAS).stamp
export NUMBA_CACHE_DIR ?= $(CACHE)/numba
PYTEST_ARGS ?=

.PHONY: install run test browser lint bench soak clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
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
	$(PYTHON) -m collector.cli up --demo

test: install browser
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: install
	@$(PYTHON) -m ruff --version >/dev/null 2>&1 || $(PYTHON) -m pip install ruff
	$(PYTHON) -m ruff check collector dashboard trainer_plugin tests

bench: install
	$(PYTHON) tests/benchmarks/run_all.py

# Reliability at full size (~6 min): 100k bad frames, collector stopped 30 s / killed mid-run, kill -9
# durability, 8 publishers x 200 frames/s for 60 s; prints a table and writes soak-results.json.
soak: install
	$(PYTHON) tests/soak.py

clean:
	rm -rf $(CACHE) .pytest_cache build *.egg-info test-artifacts bench-results.json soak-results.json
