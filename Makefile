# vitcompress: the two commands a newcomer needs.
#   make demo   set up .venv (if missing), run the whole pipeline on the offline demo profile
#   make test   set up .venv (if missing), run the test suite
# Both honour VENV=/path/to/venv to reuse an existing environment.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitcompress-installed
LOCK := requirements.lock
UV_VERSION := 0.13.9
# the pip constraints this machine's pip applies (e.g. a local cap on torch), so the lock installs here too
PIP_CONSTRAINTS = $(foreach c,$(PIP_CONSTRAINT) $(shell $(PY) -m pip config list 2>/dev/null | sed -n "s/^global.constraint='\(.*\)'$$/\1/p"),--constraint $(c))
CORES ?= 4
SNAKEMAKE_ARGS ?=

.PHONY: demo test test-cluster paper-smoke install lock lint clean help

help:
	@echo "make demo   - install into $(VENV) if needed, run the demo profile, print where the tables are"
	@echo "make test   - install into $(VENV) if needed, run pytest"
	@echo "make paper-smoke - the paper profile (ViT-B/16, 224x224, every row) on hand-made CIFAR and weights files, CPU"
	@echo "make test-cluster - a one-node SLURM on this machine (installs slurm, munge, MariaDB), the tiny profile through profiles/slurm"
	@echo "make lock   - regenerate requirements.lock (exact versions, hashes) and envs/ from pyproject.toml"
	@echo "make lint   - ruff check and snakemake --lint (CI runs it before the tests)"
	@echo "make clean  - remove results/, logs/, rendered reports (keeps $(VENV) and data/raw/)"

$(PY):
	python3 -m venv $(VENV)

# Exactly what the lock names, hashes checked; then the project itself, without resolving anything.
$(STAMP): $(LOCK) pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# After a change to pyproject.toml's dependencies, or to move to newer releases: resolve again (uv), with
# hashes, for the Python and platform CI runs; then the conda env from the same lock.
lock: | $(PY)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu $(PIP_CONSTRAINTS) --no-header --quiet -o $(LOCK).tmp
	{ echo "# Generated from pyproject.toml by \`make lock\`: uv pip compile pyproject.toml --extra test --generate-hashes"; \
	  echo "#   --python-version 3.11 --python-platform x86_64-unknown-linux-gnu$(if $(PIP_CONSTRAINTS), (with this machine's pip constraints),)"; \
	  echo "# Do not edit; make demo / make test / CI install exactly this (pip --require-hashes --no-deps)."; \
	  cat $(LOCK).tmp; } > $(LOCK) && rm -f $(LOCK).tmp
	$(PY) -m vitcompress env --write-conda

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

# Not part of `make test`: installs system packages (root) and starts SLURM's daemons, stopping them after.
test-cluster: $(STAMP)
	VENV=$(abspath $(VENV)) bash scripts/test_cluster.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --lint

clean:
	rm -rf results logs .snakemake reports data/prepared data/smoke
