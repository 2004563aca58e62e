# The newcomer's contract: `make run` starts the gateway, `make test` proves it. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint lock tools bench clean

# Installed from the lock files: every package, direct or not, at the version and hashes locked there.
# requirements*.txt are what people edit; `make lock` turns them into requirements*.lock.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps

$(VENV)/.runtime: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.lock
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.lock
	$(PIP_INSTALL) -r requirements-dev.lock
	touch $@

# Resolved against PyPI alone (not a machine's local mirrors), for CPython 3.11 on Linux x86-64 (what runs
# the gateway); versions already in a lock file are kept unless an input asks otherwise. The dev lock is
# constrained by the runtime one, so the two agree on every package they share.
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--index-url https://pypi.org/simple --no-emit-index-url --custom-compile-command "make lock"
lock: $(VENV)/.dev
	$(LOCK) requirements.txt -o requirements.lock
	$(LOCK) -c requirements.lock requirements-dev.txt -o requirements-dev.lock

run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	exec $(BIN)/python manage.py rungateway

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # protocols/ and the fan-out engine, untyped definitions refused (pyproject.toml [tool.mypy])

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
