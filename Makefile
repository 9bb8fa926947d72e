# Two entry points for a fresh machine (Python 3.11 + pip): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cbtool-installed
DEMO_OUT ?= demo_out

.PHONY: demo test install bench docs docs-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[cpu,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh $(DEMO_OUT)

test: $(STAMP)
	bash tests/setup.sh
	$(BIN)/python -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python examples/transcripts.py --write

docs-check: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python examples/transcripts.py --check

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
