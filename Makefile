# vitcompress: the two commands a newcomer needs.
#   make demo   set up .venv (if missing), run the whole pipeline on the offline demo profile
#   make test   set up .venv (if missing), run the test suite
# Both honour VENV=/path/to/venv to reuse an existing environment.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitcompress-installed
CORES ?= 4
SNAKEMAKE_ARGS ?=

.PHONY: demo test paper-smoke install lint clean help

help:
	@echo "make demo   - install into $(VENV) if needed, run the demo profile, print where the tables are"
	@echo "make test   - install into $(VENV) if needed, run pytest"
	@echo "make paper-smoke - the paper profile (ViT-B/16, 224x224, every row) on hand-made CIFAR and weights files, CPU"
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

# The paper profile end to end with no network and no GPU: hand-made CIFAR-10/100 and timm weights files
# (random), the paper's models, input size, rows and methods, only data size, steps and timing repeats cut;
# then the test of its artifacts' sizes (tests/test_paper_smoke.py).
paper-smoke: $(STAMP)
	$(PY) -m vitcompress smoke-files --profile paper_smoke
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --cores $(CORES) --resources gpu=1 --config profile=paper_smoke $(SNAKEMAKE_ARGS)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q tests/test_paper_smoke.py
	@echo
	@echo "Tables:  $(CURDIR)/reports/tables.md   (profile paper_smoke; per-job time and memory: reports/jobs.csv)"

lint: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --lint

clean:
	rm -rf results logs .snakemake reports data/prepared data/smoke
