# The newcomer's contract: `make run` starts the gateway, `make test` proves it. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint tools bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	exec $(BIN)/python manage.py rungateway

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Programs the tests drive: Debian's Chromium (browser downloads are not possible on these machines),
# nginx (the deploy example in front of two gateways) and systemd-analyze (the example units).
TOOLS := chromium:chromium nginx:nginx-light systemd-analyze:systemd
tools:
	@missing=; for tool in $(TOOLS); do command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	  [ -z "$$missing" ] || { apt-get update -qq && apt-get install -y -qq $$missing; } \
	  || { echo "The tests need:$$missing (apt-get install$$missing)"; exit 1; }

test: lint tools
	$(BIN)/python -m pytest

# The gateway against a plain Channels chat, side by side (bench/README.md): a table, and bench/results/<time>.json.
# Smaller and faster: make bench BENCH_ARGS="--quick"; one scenario: BENCH_ARGS="--scenarios fanout".
BENCH_ARGS ?=
bench: $(VENV)/.dev
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
