# make demo / make test bootstrap everything on a machine with only Python 3.11, pip and apt.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
DEVICES := .devices
PY36 ?= $(firstword $(wildcard /root/.pyenv/versions/3.6.15/bin/python $(shell command -v python3.6 2>/dev/null)))
PY310 ?= $(firstword $(wildcard /root/.pyenv/versions/3.10.13/bin/python $(shell command -v python3.10 2>/dev/null)))

.PHONY: demo test check docs venv system-deps device-venvs bench clean

venv: $(STAMP)

# A venv without pip (Debian/Ubuntu python3 lacks ensurepip until python3-venv is installed,
# or an interrupted run) is rebuilt: apt's python3-venv first, then virtualenv from pip.
$(STAMP): pyproject.toml
	$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); $(PY) -m venv $(VENV); } || \
	{ rm -rf $(VENV); (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PY) -m venv $(VENV); } || \
	{ rm -rf $(VENV); $(PY) -m pip install -q --user --break-system-packages virtualenv && $(PY) -m virtualenv -q $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# System packages the tests talk to for real (an OpenSSH server on 127.0.0.1; Debian's
# chromium, the headless browser tests/test_report_html.py opens report.html in).
system-deps:
	@if [ ! -x /usr/sbin/sshd ]; then \
	  echo "installing openssh-server (apt)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium (apt)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# The devices' own software: Jetson Nano's Python 3.6 (numpy 1.19.5 + onnxruntime 1.10.0)
# and OpenVINO 2022.3.1 (the NCS2-era API) on Python 3.10. Missing interpreters are reported
# loudly by the tests that need them.
device-venvs: $(DEVICES)/py36/.ok $(DEVICES)/ov2022/.ok

$(DEVICES)/py36/.ok:
	@if [ -n "$(PY36)" ]; then \
	  $(PY36) -m venv $(DEVICES)/py36 && \
	  $(DEVICES)/py36/bin/python -m pip install -q 'pip==21.3.1' && \
	  $(DEVICES)/py36/bin/python -m pip install -q numpy==1.19.5 onnxruntime==1.10.0 && touch $@; \
	else echo "WARNING: no Python 3.6 interpreter found: Jetson-Nano-Python tests will fail loudly"; fi

$(DEVICES)/ov2022/.ok:
	@if [ -n "$(PY310)" ]; then \
	  $(PY310) -m venv $(DEVICES)/ov2022 && \
	  $(DEVICES)/ov2022/bin/python -m pip install -q --upgrade pip && \
	  $(DEVICES)/ov2022/bin/python -m pip install -q 'numpy<2' openvino==2022.3.1 tomli && touch $@; \
	else echo "WARNING: no Python 3.10 interpreter found: OpenVINO 2022.3 tests will fail loudly"; fi

# --force: a second `make demo` replaces demo-out/ (only once the new run has completed).
demo: $(STAMP)
	$(BIN)/edgekit demo -o demo-out --force

test: $(STAMP) system-deps device-venvs
	$(BIN)/python -m pytest -q -rs --durations=15

# The inner loop (<= 2 min): pyflakes rules (ruff), the import contract (tests/test_layers.py:
# no cycles, layers cli..runtime) and fast unit tests. `make test` runs everything.
CHECK_TESTS := tests/test_layers.py tests/test_verbs.py tests/test_runtime_light.py \
	tests/test_registry.py tests/test_target_schema.py \
	tests/test_artifact.py tests/test_report.py tests/test_report_staging.py \
	tests/test_compress_options.py tests/test_knn_head.py tests/test_targets.py
check: $(STAMP)
	$(BIN)/python -m ruff check --select F --exclude edgekit/_data edgekit tests
	$(BIN)/python -m pytest -q -x $(CHECK_TESTS) -k "not ncs2 and not ov2022"

# The documentation site (MkDocs + Material) into site/; the CLI reference is generated from the
# option declarations by docs/hooks/cli_reference.py. tests/test_docs.py builds it --strict too.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

# Slow benchmarks (MNIST, minutes each); results go to BENCHMARKS.md by hand with their commands.
bench: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(DEVICES)
