# Sensei: `make run` starts the dashboard, `make test` runs everything CI runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: run serve test check demo bench clean-workspace chromium postgresql

# The project itself is installed editable (engine/ only, no dependencies: requirements.txt
# pins those), so `import engine` works from any directory, not only the repository root.
$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet -e . --no-deps
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

## run: start the dashboard (SQLite workspace in ./workspace, local subprocess executor);
## SENSEI_DEV=1 shows full error details (tracebacks) in the browser
run: $(VENV)/.runtime
	$(VENV)/bin/streamlit run app.py $(if $(filter 1,$(SENSEI_DEV)),--client.showErrorDetails=full)

## serve: the dashboard for a team on every interface (0.0.0.0), everyone signed in through
## OpenID Connect; refused (exit 2) unless [auth] is configured in .streamlit/secrets.toml.
## Error details stay hidden and CORS/XSRF protection on, whatever SENSEI_DEV says. PORT=8501
serve: $(VENV)/.runtime
	$(PY) -m engine serve $(if $(PORT),--port $(PORT))

## demo: the dashboard's demo ablation, headless; prints the curve
demo: $(VENV)/.runtime
	$(PY) -m engine demo

## chromium: Debian's Chromium for the real-browser test (never `playwright install`)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

## postgresql: Debian's PostgreSQL server binaries; the store tests start a throwaway server
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

## check: lint, format and types
check: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy engine

## test: install what is missing, then lint and run the whole suite, one pytest worker per
## core (at most 4; each trains with one thread, see tests/conftest.py). `pytest` alone runs
## it in one process.
test: $(VENV)/.dev chromium postgresql check
	$(VENV)/bin/pytest -n auto --maxprocesses=4 --dist worksteal

## bench: speed benchmarks (ratios against a baseline in the same run)
bench: $(VENV)/.dev
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean-workspace:
	rm -rf workspace
