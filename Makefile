# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv lint bench clean stop-embedded chromium

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m loyalty.run

# The browser tests (tests/browser) drive Debian's chromium; it is installed here when it is missing
# and apt-get can (as root). Without it those tests are skipped and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || [ -n "$$CHROMIUM" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install chromium: the browser tests will be skipped"; \
	  else echo "no chromium, and no apt-get as root to install it: the browser tests will be skipped"; fi; }

test: $(STAMP) chromium
	DEBUG=$${DEBUG:-1} $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	DEBUG=$${DEBUG:-1} $(BIN)/python -m bench.run_all $(BENCH_ARGS)

stop-embedded: $(STAMP)
	$(BIN)/python -c "from loyalty import embedded; embedded.redis_stop(); embedded.postgres_stop()"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
