# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# The Spark engine's tests need the `spark` extra (pyspark: a ~320 MB download that
# unpacks to ~470 MB, about 3 minutes the first time) and a Java runtime.  Where `java`
# is found, the test set-up installs the extra and the tests must run (not skip).
JAVA        := $(shell command -v java 2>/dev/null)
SPARK_STAMP := $(VENV)/.spark-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-gpu bench lint clean

install: $(STAMP)

$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[spark]'
	rm -f $(VENV)/.spark-*
	touch $@

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,ann]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/recompare compare data/planted -o demo-report --overwrite

test: install $(if $(JAVA),$(SPARK_STAMP))
	RECOMPARE_REQUIRE_SPARK=$(if $(JAVA),1,0) $(BIN)/python -m pytest
	$(BIN)/recompare bench all --scale tiny --output bench-results/tiny
	$(if $(JAVA),$(BIN)/recompare bench scale --scale tiny --output bench-results/tiny-scale)

# the GPU paths (tests/test_gpu.py, marker `gpu`): fails, not skips, without a CUDA GPU
test-gpu: install
	$(BIN)/python -m pytest -m gpu tests/test_gpu.py

bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/recompare bench all --scale full --output bench-results/full

lint: install
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check recompare tests

clean:
	rm -rf $(VENV) demo-report bench-results .pytest_cache
