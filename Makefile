# brainage: the two set-up commands are `make demo` and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
# CPU wheel for CI and local venvs; users with a GPU may set TORCH_SPEC=torch (normal PyPI build).
TORCH_SPEC ?= torch==2.13.0
STAMP     := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash pipelines/demo.sh

test: install
	$(PY) -m pytest -q

clean:
	rm -rf demo-output mlruns mlflow.db
