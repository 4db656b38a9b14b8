# The two commands: `make studio` (set up, then launch on embedded defaults) and `make test`;
# `make team` starts the team stack on one machine.
PYTHON ?= python3.11
VENV := .venv
PIP := $(VENV)/bin/pip
TORCH_PIN := $(shell grep -E '^torch==' requirements.txt)
COMPAT_VENV := .venv-compat

.PHONY: studio team test screenshots test-airflow test-compat install install-test system-deps bench lint clean

studio: install
	$(VENV)/bin/streamlit run app/main.py

# The team stack on one machine: PostgreSQL (Debian's `postgresql`, a cluster under STUDIO_HOME/team),
# the MLflow server on it, the studio and its HTTP API; prints the URLs, Ctrl-C stops them all.
# Options go in TEAM_ARGS, e.g. make team TEAM_ARGS="--host 0.0.0.0 --port 8502" (`studio team up -h`).
team: install
	$(VENV)/bin/studio team up $(TEAM_ARGS)

test: install-test $(COMPAT_VENV)/.installed
	$(VENV)/bin/python -m pytest -n 2 --dist loadgroup tests
	$(COMPAT_VENV)/bin/python -m pytest -c tests/compat/pytest.ini tests/compat

# The README's screenshots, refreshed from the browser tests (a plain test run writes them to a temp folder).
screenshots: install-test
	STUDIO_SCREENSHOTS=1 $(VENV)/bin/python -m pytest -n 0 -m browser tests/test_home.py tests/test_datasets_browser.py tests/test_runs_browser.py tests/test_playground.py tests/test_journey.py tests/test_subject_journey.py tests/test_sign_in.py

# torch first (the pinned build: CPU here, CUDA on a GPU host), then everything else without build
# isolation so DeepSpeed builds against that torch, with its CUDA ops compiled just in time
# (DS_BUILD_OPS=0). open-clip-torch goes in without its dependencies: only its vocabulary is used,
# and the torchvision it would pull breaks this torch build.
$(VENV)/.installed: requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==25.3 setuptools==84.2.1 wheel==0.48.0
	$(PIP) install --quiet "$(TORCH_PIN)"
	DS_BUILD_OPS=0 $(PIP) install --quiet --no-build-isolation -r requirements.txt -c constraints.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install --quiet -r requirements-test.txt -c constraints.txt
	touch $@

install-test: install $(VENV)/.installed-test system-deps

# The pipeline's Airflow DAG, tested in its own environment (Airflow's pins differ from the
# studio's; its tasks run the steps in .venv through ExternalPythonOperator). tests/airflow is
# left out of `make test` (tests/conftest.py ignores it where Airflow is not importable).
AIRFLOW_VENV := .venv-airflow
$(AIRFLOW_VENV)/.installed: requirements-airflow.txt pyproject.toml
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV) || python3 -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip==25.3
	$(AIRFLOW_VENV)/bin/pip install --quiet -r requirements-airflow.txt
	$(AIRFLOW_VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

test-airflow: install $(AIRFLOW_VENV)/.installed
	$(AIRFLOW_VENV)/bin/python -m pytest -c tests/airflow/pytest.ini tests/airflow

# Tools on transformers 4.x (its slow CLIPTokenizer, CLIPTextModel, Optimum's ONNX exporter and
# pipeline) loading a model folder and an ONNX export the studio saved, in their own environment:
# requirements-compat.txt says why. Part of `make test` (~40 s with its install); tests/compat
# skips itself under the main suite's transformers 5.
$(COMPAT_VENV)/.installed: requirements-compat.txt $(VENV)/.installed-test
	test -x $(COMPAT_VENV)/bin/python || $(VENV)/bin/python -m venv --without-pip $(COMPAT_VENV)
	$(PIP) --python $(COMPAT_VENV)/bin/python install --quiet --no-deps -r requirements-compat.txt
	$(VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
		> "$$($(COMPAT_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/zz-studio-venv.pth"
	touch $@

test-compat: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/python -m pytest -c tests/compat/pytest.ini tests/compat

# Debian packages the tests need: chromium for the browser tests, fonts so pages render (emoji),
# and the built-in real datasets (Fashion-MNIST; emoji names from unicode-data).
DEBIAN_PACKAGES := chromium fonts-dejavu-core fonts-noto-color-emoji dataset-fashion-mnist unicode-data postgresql
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "Install these Debian packages first: sudo apt-get install $$missing"; exit 1; fi; \
	fi

bench: install-test
	$(VENV)/bin/python bench/train_throughput.py
	$(VENV)/bin/python bench/quality_digits.py
	$(VENV)/bin/python bench/quality_digits.py --quick

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) studio-data .pytest_cache
