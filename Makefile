# Two commands do all the set-up: `make run` and `make test` create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test test-fast lint browser bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first, pinned to the CPU build: a bare range would pull a multi-GB CUDA wheel
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m gptfit.train +experiment=tiny_corpus $(ARGS)

test: $(STAMP) browser lint
	$(PY) -m pytest -q $(ARGS)

# The inner loop: every test not marked slow (no training run, command or browser), in under 3 minutes here.
test-fast: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow" $(ARGS)

# Ruff (pinned in the test extra): the lint rules and the format of pyproject.toml, on everything.
lint: $(STAMP)
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/ruff format --check --quiet .

# The explorer page's tests drive Debian's Chromium headless: installed here when missing (through sudo when
# not root), so that `make test` is the whole set-up; elsewhere one line says what to install.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "error: the explorer page's tests need Chromium and its driver (chromium, chromedriver on PATH); install them, then run make test again" >&2; exit 2; fi; \
	  SUDO=; if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; \
	    command -v sudo >/dev/null || { echo "error: the explorer page's tests need chromium and chromium-driver: run apt-get install chromium chromium-driver as root, then make test again" >&2; exit 2; }; fi; \
	  echo "installing Debian's chromium and chromium-driver for the explorer page's tests"; \
	  $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null \
	    || { echo "error: apt-get could not install chromium and chromium-driver; install them, then run make test again" >&2; exit 2; }; \
	fi

bench: $(STAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV)
