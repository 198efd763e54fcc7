# The README's two commands: `make run` and `make test`. Both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
DATA ?= ../shared/data/sports100
WILD ?= ../shared/data/wild-dev

.PHONY: run test train export evaluate calibrate eda notebook bench versus chromium clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# Web app, worker and their supervisor only: no torch. Plus the client, editable, so .venv/bin/sportclf
# runs this checkout's code.
$(VENV)/.service: $(VENV)/bin/python requirements/base.txt requirements/web.txt requirements/worker.txt requirements/client.txt requirements/run.txt pyproject.toml
	$(PIP) install -r requirements/web.txt -r requirements/worker.txt -r requirements/client.txt -r requirements/run.txt -e .
	touch $@

# Everything (adds torch and test tools).
$(VENV)/.dev: $(VENV)/.service requirements/ml.txt requirements/dev.txt
	$(PIP) install -r requirements/dev.txt
	touch $@

chromium:  # the browser tests drive Debian's Chromium (Playwright's own download cannot work offline)
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

# Prometheus's config checker for tests/test_compose.py, taken out of Debian's prometheus package
# (no server installed or started).
$(VENV)/bin/promtool: | $(VENV)/bin/python
	cd $(VENV) && (apt-get download -q prometheus || (apt-get update -q && apt-get download -q prometheus)) && \
	  dpkg-deb --fsys-tarfile prometheus_*.deb | tar -xO ./usr/bin/promtool > promtool.part && \
	  chmod +x promtool.part && mv promtool.part bin/promtool && rm prometheus_*.deb

run: $(VENV)/.service
	bin/run

test: $(VENV)/.dev chromium $(VENV)/bin/promtool
	$(PY) -m pytest tests

train: $(VENV)/.dev
	$(PY) -m ml.train --data $(DATA) $(ARGS)

export: $(VENV)/.dev
	$(PY) -m ml.export --data $(DATA) --wild $(WILD) $(ARGS)

evaluate: $(VENV)/.dev
	$(PY) -m ml.evaluate --set valid=$(DATA)/valid --set wild-dev=$(WILD) $(ARGS)

calibrate: $(VENV)/.dev
	$(PY) -m ml.calibrate --valid $(DATA)/valid --wild $(WILD) $(ARGS)

eda: $(VENV)/.dev
	$(PY) -m ml.eda --data $(DATA) $(ARGS)

notebook: $(VENV)/.dev  # reruns ml/notebooks/training.ipynb in place from the reports above; trains nothing
	SPORTS100_DATA=$(DATA) WILD_DEV_DATA=$(WILD) $(VENV)/bin/jupyter-execute --inplace --timeout=600 ml/notebooks/training.ipynb

bench: $(VENV)/.dev
	$(PY) -m bench.run $(ARGS)

versus: $(VENV)/.dev  # the service against the peer, interleaved rounds (bench/versus.py)
	$(PY) -m bench.versus $(ARGS)

clean:
	rm -rf $(VENV) var
