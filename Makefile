# emobed-jax: `make demo` and `make test` work on a fresh clone with only Python 3 installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# tcmalloc makes JAX on the CPU 1.4-1.8x faster (glibc malloc page-faults every step); used
# where installed (Debian: apt-get install libtcmalloc-minimal4).
TCMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4))
PRELOAD := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC),)
DEMO_DIR ?= demo_runs

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(PRELOAD) $(PY) experiments/demo.py --workdir=$(DEMO_DIR)

test: install
	$(PRELOAD) $(PY) -m pytest tests -q -p no:cacheprovider -n 2 --dist loadfile

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
