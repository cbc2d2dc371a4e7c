# Two entry points: `make run` and `make test`. Both create .venv when missing and install the
# pinned set (requirements/lock.txt) first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_VERSION := 26.3
export PIP_CONSTRAINT := $(CURDIR)/requirements/lock.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test install lock screenshot clean-venv bundle wheelhouse

$(PY):
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml requirements/lock.txt
	$(PY) -m pip install -q "pip==$(PIP_VERSION)"
	$(PY) -m pip install -q -e ".[train,dev]"
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m breakfix_desktop

test: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

# Regenerate the pinned set from the current environment (after changing dependencies).
lock: install
	{ echo "# Pinned set for 'make install' (pip install -c requirements/lock.txt -e .[train,dev])."; \
	  echo "# torch/torchvision: the registry's CUDA 13 builds (they run on CPU too). Regenerate with 'make lock'."; \
	  $(PY) -m pip freeze --all --exclude-editable | grep -v -i -E '^(breakfix|pip==)'; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt

# Offline installers (docs/installer.md).  Neither needs .venv: each makes what it needs.
# `make bundle`: the Linux screening bundle dist/breakfix-screening/ (PyInstaller, own build venv
# installer/.buildvenv with the screening set only), then its self-test offscreen; prints size and time.
BUNDLE_ARGS ?=
bundle:
	PYTHON=$(PYTHON) installer/build_screening_bundle.sh $(BUNDLE_ARGS)

# `make wheelhouse`: every pinned wheel of the full install + the project's wheel in $(WHEELHOUSE);
# install elsewhere with $(WHEELHOUSE)/install_from_wheelhouse.sh $(WHEELHOUSE) [--screening-only].
WHEELHOUSE ?= wheelhouse
WHEELHOUSE_ARGS ?= --platform manylinux_2_34_x86_64 --python-version 3.11
wheelhouse:
	PYTHON=$(PYTHON) installer/make_wheelhouse.sh $(WHEELHOUSE_ARGS) $(WHEELHOUSE)

screenshot: install
	QT_QPA_PLATFORM=offscreen $(PY) -m breakfix_desktop.tools.screenshot --out shots/main.png

clean-venv:
	rm -rf $(VENV)
