# brainage: the two set-up commands are `make demo` and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
# CPU wheel for CI and local venvs; users with a GPU may set TORCH_SPEC=torch (normal PyPI build).
TORCH_SPEC ?= torch==2.13.0
STAMP     := $(VENV)/.installed
# pytest-xdist workers (auto = one per CPU core); WORKERS=0 runs in one process
WORKERS   ?= auto

.PHONY: install demo test test-fast browser clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,prepare]"
	touch $(STAMP)

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash pipelines/demo.sh

test: install browser
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=15  # a file's module fixtures (trained models) built once; tests/conftest.py orders the files

# the edit-test loop: everything not marked slow (no training, DDP, servers or end-to-end runs); ~2 min on 2 cores
test-fast: install
	$(PY) -m pytest -q -n $(WORKERS) -m "not slow" --durations=10

# Headless Chromium for the report screenshot test (Debian package; installed only when missing and root).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	      echo "could not install chromium: the report screenshot test will be skipped"; \
	  else echo "chromium not found: the report screenshot test will be skipped (install chromium to run it)"; fi

clean:
	rm -rf demo-output mlruns mlflow.db
