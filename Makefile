# multisite-drp: every target installs what it needs, so a fresh clone works.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOT := $(CURDIR)
DATA ?= $(ROOT)/var/embedded
CAMPAIGN ?= include/campaigns/minidrp_embedded.yaml

export PYTHONPATH := $(ROOT)/plugins:$(ROOT)/include:$(ROOT)
export AIRFLOW_HOME ?= $(ROOT)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# pandaclient resolves a host at import time; keep it on loopback unless told otherwise.
export PANDA_BEHIND_REAL_LB ?= 1
export PANDA_URL ?= http://127.0.0.1:25080/server/panda
export PANDA_URL_SSL ?= http://127.0.0.1:25080/server/panda
# Where the DAG's Params may point (campaign files, pipelines, data roots): the deployment's
# allowed roots, absolute directories separated by ':'. `make up` and `make airflow-settings`
# use $(DATA), which must lie inside one; scripts/run_campaign.py adds its own data root.
export MULTISITE_DRP_ALLOWED_ROOTS ?= $(ROOT)/include/campaigns:$(ROOT)/include/pipelines:$(ROOT)/var

.PHONY: browser down venv rucio-venv test test-fast demo sites single-site up airflow-settings bench lint clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	touch $(STAMP)

# The Rucio server and daemons of the local deployment (include/localrucio) live in their
# own virtualenv: rucio's pins conflict with the project's, and `rucio` and `rucio-clients`
# both install the `rucio/` package.
RUCIO_VENV := .venv-rucio
RUCIO_STAMP := $(RUCIO_VENV)/.installed

rucio-venv: $(RUCIO_STAMP)

$(RUCIO_STAMP): requirements-rucio.txt constraints-rucio.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(RUCIO_VENV)/bin/python || $(PY) -m venv $(RUCIO_VENV)
	$(RUCIO_VENV)/bin/pip install -q --upgrade pip
	$(RUCIO_VENV)/bin/pip install -q -r requirements-rucio.txt -c constraints-rucio.txt
	touch $(RUCIO_STAMP)

# Two pytest sessions side by side (scripts/run_tests.py): the end-to-end campaign module in
# one, the rest of the suite in the other, each with its own local Rucio and Airflow home.
# Debian's Chromium and chromedriver, for the test that looks at the campaign page in Airflow's UI.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; fi

test: venv rucio-venv browser
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python scripts/run_tests.py $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not e2e" $(PYTEST_ARGS)

sites: venv
	$(BIN)/python -m minidrp build --root $(DATA)

single-site: sites
	$(BIN)/python -m minidrp validate --root $(DATA)

# The whole three-site, nine-step campaign through Airflow (dag.test: the scheduler's own
# loop, deferral to the real triggers) on freshly built embedded sites under var/demo,
# replicating through a real local Rucio (var/demo/rucio: PostgreSQL, server, daemons,
# Replica Monitor), which is stopped at the end.
# Progress lines and the campaign report go to the terminal; Airflow's full log to var/demo/airflow.log.
DEMO ?= $(ROOT)/var/demo
demo: venv rucio-venv
	-$(BIN)/python -m localrucio down --root $(DEMO)/rucio >/dev/null 2>&1
	-$(BIN)/python -m localpanda down --root $(DEMO)/panda >/dev/null 2>&1
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	set -o pipefail; $(BIN)/python scripts/run_campaign.py --data-root $(DEMO)/sites --rucio-root $(DEMO)/rucio \
	  --panda-root $(DEMO)/panda \
	  --json-out $(DEMO)/run.json \
	  2>&1 | tee $(DEMO)/airflow.log | awk '/^=== campaign report/ {p=1} p {print; fflush(); next} \
	    /\[DAG TEST\] starting task_id=/ {match($$0, /task_id=[^ ]+/); print "  running " substr($$0, RSTART+8, RLENGTH-8); fflush(); next} \
	    /DRP ALERT|^building|^\[minidrp build\]|^drp_campaign:|^local Rucio|^local PanDA/ {print; fflush()}'; \
	  status=$$?; $(BIN)/python -m localrucio down --root $(DEMO)/rucio; \
	  $(BIN)/python -m localpanda down --root $(DEMO)/panda; exit $$status
	@echo "report: $(DEMO)/sites/work/report/g0/report.md   plan and sky map: $(DEMO)/sites/work/plan/g0/"

airflow-settings: venv rucio-venv
	$(BIN)/python -m minidrp build --root $(DATA)
	$(BIN)/python scripts/load_airflow_settings.py airflow_settings.yaml --local-rucio $(ROOT)/var/rucio \
	  --local-panda $(ROOT)/var/panda --data-root $(DATA)

# Airflow's UI with the project loaded, under the real scheduler: include/airflowstack runs
# PostgreSQL 15 (the metadata database), `airflow scheduler` (LocalExecutor), `airflow triggerer`,
# `airflow dag-processor` and `airflow api-server` on 127.0.0.1, under $(AIRFLOW_HOME)/stack, with
# the connections of airflow_settings.yaml (as AIRFLOW_CONN_* variables; the local Rucio and PanDA
# relay filled in) and its pools; the embedded sites are built in $(DATA). It prints the URL: log in
# as `admin`, the password is in $(AIRFLOW_HOME)/stack/passwords.json (generated, 0600). Trigger
# drp_campaign there. Everything keeps running until `make down`.
up: venv rucio-venv
	$(BIN)/python scripts/run_campaign.py --scheduler real --up-only --data-root $(DATA) \
	  --rucio-root $(ROOT)/var/rucio --panda-root $(ROOT)/var/panda

down: venv
	$(BIN)/python -m airflowstack down --root $(AIRFLOW_HOME)/stack
	$(BIN)/python -m localrucio down --root $(ROOT)/var/rucio
	$(BIN)/python -m localpanda down --root $(ROOT)/var/panda

bench: venv rucio-venv
	$(BIN)/python bench/planner_scale.py
	$(BIN)/python bench/replication.py
	$(BIN)/python bench/orchestration_overhead.py
	$(BIN)/python bench/workflow_overhead.py
	$(BIN)/python bench/campaign_scale.py

# ruff, then the import contract of pyproject.toml ([tool.importlinter]: the one-way layers).
lint: venv
	$(BIN)/ruff check plugins include dags tests bench
	$(BIN)/lint-imports --no-cache --no-logo

clean:
	rm -rf var .pytest_cache
