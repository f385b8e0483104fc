# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,ann]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/recompare compare data/planted -o demo-report --overwrite

test: install
	$(BIN)/python -m pytest
	$(BIN)/recompare bench all --scale tiny --output bench-results/tiny

bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/recompare bench all --scale full --output bench-results/full

lint: install
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check recompare tests

clean:
	rm -rf $(VENV) demo-report bench-results .pytest_cache
