# vitcompress: the two commands a newcomer needs.
#   make demo   set up .venv (if missing), run the whole pipeline on the offline demo profile
#   make test   set up .venv (if missing), run the test suite
# Both honour VENV=/path/to/venv to reuse an existing environment.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitcompress-installed
CORES ?= 4
SNAKEMAKE_ARGS ?=

.PHONY: demo test install lint clean help

help:
	@echo "make demo   - install into $(VENV) if needed, run the demo profile, print where the tables are"
	@echo "make test   - install into $(VENV) if needed, run pytest"
	@echo "make lint   - snakemake --lint"
	@echo "make clean  - remove results/, logs/, rendered reports (keeps $(VENV) and data/raw/)"

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --cores $(CORES) --resources gpu=1 $(SNAKEMAKE_ARGS)
	@echo
	@echo "Tables:  $(CURDIR)/reports/tables.md"
	@echo "         $(CURDIR)/reports/tables.tex"
	@echo "Metrics: $(CURDIR)/reports/metrics.csv"

test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --lint

clean:
	rm -rf results logs .snakemake reports/*.md reports/*.tex reports/*.csv reports/*.json reports/figures data/prepared
