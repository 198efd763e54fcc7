# The README's two commands: `make run` and `make test`. Both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
DATA ?= ../shared/data/sports100

.PHONY: run test train export evaluate eda bench chromium clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# Web app and worker only: no torch. Plus the client, editable, so .venv/bin/sportclf runs this checkout's code.
$(VENV)/.service: $(VENV)/bin/python requirements/base.txt requirements/web.txt requirements/worker.txt requirements/client.txt pyproject.toml
	$(PIP) install -r requirements/web.txt -r requirements/worker.txt -r requirements/client.txt -e .
	touch $@

# Everything (adds torch and test tools).
$(VENV)/.dev: $(VENV)/.service requirements/ml.txt requirements/dev.txt
	$(PIP) install -r requirements/dev.txt
	touch $@

chromium:  # the browser tests drive Debian's Chromium (Playwright's own download cannot work offline)
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

run: $(VENV)/.service
	bin/run

test: $(VENV)/.dev chromium
	$(PY) -m pytest tests

train: $(VENV)/.dev
	$(PY) -m ml.train --data $(DATA) $(ARGS)

export: $(VENV)/.dev
	$(PY) -m ml.export --data $(DATA) $(ARGS)

evaluate: $(VENV)/.dev
	$(PY) -m ml.evaluate --data $(DATA)/valid $(ARGS)

eda: $(VENV)/.dev
	$(PY) -m ml.eda --data $(DATA) $(ARGS)

bench: $(VENV)/.dev
	$(PY) -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) var
