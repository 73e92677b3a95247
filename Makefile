# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv lint bench clean stop-embedded

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m loyalty.run

test: $(STAMP)
	DEBUG=$${DEBUG:-1} $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	DEBUG=$${DEBUG:-1} $(BIN)/python -m bench.run_all $(BENCH_ARGS)

stop-embedded: $(STAMP)
	$(BIN)/python -c "from loyalty import embedded; embedded.redis_stop(); embedded.postgres_stop()"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
