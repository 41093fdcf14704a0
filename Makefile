# Tessera: `make run` serves a development server with a demo licence; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VAR ?= var
PORT ?= 8400
DB := sqlite:///$(VAR)/tessera.db
KEYS := $(VAR)/keys
PASSFILE := $(VAR)/dev-key-passphrase
export TESSERA_DB ?= $(DB)
export TESSERA_KEYS_DIR ?= $(KEYS)
export TESSERA_KEY_PASSPHRASE_FILE ?= $(PASSFILE)

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,test]'
	touch $(STAMP)

install: $(STAMP)

$(PASSFILE):
	mkdir -p $(VAR)
	umask 077 && $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))' > $(PASSFILE)

run: $(STAMP) $(PASSFILE)
	$(BIN)/tessera-server migrate
	@[ -f $(KEYS)/keyring.json ] || $(BIN)/tessera-admin keys generate
	$(BIN)/tessera-admin keys export-jwks --out $(VAR)/jwks.json > /dev/null
	@$(BIN)/tessera-admin demo --out $(VAR)/demo-licence.json > /dev/null
	@echo "Demo licence (also in $(VAR)/demo-licence.json):"
	@cat $(VAR)/demo-licence.json
	$(BIN)/tessera-server serve --host 127.0.0.1 --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check server client_agent keys tessera_common tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# The benches run the package as it is installed (not editable): one venv for the three of them.
BENCH_VENV := $(VAR)/bench-venv
bench: $(STAMP)
	rm -rf $(BENCH_VENV)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet '.[server]'
	$(BIN)/python bench/server_bench.py --server-venv $(BENCH_VENV)
	$(BIN)/python bench/agent_bench.py --cli-venv $(BENCH_VENV)
	$(BIN)/python bench/scale_bench.py --server-venv $(BENCH_VENV)

clean:
	rm -rf $(VENV) $(VAR)
