# `make test` is all a fresh clone needs: it builds .venv, installs the pinned requirements,
# compiles Jittor's core once (about 2.5 minutes on a fresh cache) and runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REPORT := .pytest-report.xml

.PHONY: test demo ablation gpu-check check-pythons wheelhouse venv warm clean

# WITH_MMSEG=1 also installs mmsegmentation and torch (requirements-mmseg.txt, about 5 GB), the live
# reference of the published-model tests, which otherwise skip.
REQUIREMENTS := $(if $(filter 1,$(WITH_MMSEG)),requirements-mmseg.txt,requirements.txt)
INSTALLED := $(VENV)/.installed-$(basename $(REQUIREMENTS))

venv: $(INSTALLED)

# The checkout goes first on the venv's path (a .pth file, as an editable install does it), so that
# `python tools/X.py` and `python bench/X.py` import the project with no path code of their own.
$(INSTALLED): $(REQUIREMENTS) requirements.txt Makefile
	$(PYTHON) jittor_setup/python.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(REQUIREMENTS)
	$(PY) -c "import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()['purelib'], 'ccnet_jittor.pth').write_text('import sys; %r in sys.path or sys.path.insert(0, %r)\n' % ((sys.argv[1],) * 2))" "$(CURDIR)"
	touch $@

# Jittor may compile its core, print "jit_utils updated, please rerun" and exit 0 on a fresh
# cache, so it is started twice before any real work.
warm: venv
	$(PY) -c "import jittor_env"
	$(PY) -c "import jittor_env, jittor; print('jittor', jittor.__version__, '| oneDNN:', jittor.mkl_ops is not None, '| CUDA:', bool(jittor.flags.use_cuda))"

# The report is checked for a full run (Jittor can end a run early with exit code 0).
test: warm
	rm -f $(REPORT)
	$(PY) -m pytest --junitxml=$(REPORT) $(PYTEST_ARGS)
	$(PY) tests/check_report.py $(REPORT)

# Generated data, a small CCNet trained on the CPU, its evaluation and pictures (7-11 minutes
# on a fresh clone here, less once Jittor's caches are warm).
demo: warm
	$(PY) tools/demo.py

# R = 0, 1, 2 on generated pictures whose labels only context decides, three seeds each (about 5 minutes
# here once Jittor's kernels are compiled).
ablation: warm
	$(PY) tools/ablation.py

# On a GPU machine: start-up, the attention operator, a training norm and both CCNets against the CPU, 20 training
# steps, speed and memory against PyTorch (tools/gpu_check.py; its stages took 436 s on an H100 from a cold cache).
gpu-check: warm
	$(PY) tools/gpu_check.py

# Every CPython found (the system's, pyenv's; or PYTHONS="..."), each in a fresh venv with an empty
# Jittor cache: the start above and a smoke test, as a table (tools/check_pythons.py; about 10 minutes
# per Python here, most of it Jittor's first compile and, on 3.13, building NumPy 1.26).
check-pythons:
	$(PYTHON) tools/check_pythons.py $(PYTHONS)

# For a machine without internet (a GPU node): every pinned package for CPython $(WHEEL_PYTHON) on
# x86-64 Linux in wheelhouse/ (Jittor as its source, which pip builds there); install there with
# pip install --no-index --find-links wheelhouse -r requirements.txt
WHEEL_PYTHON ?= 3.12
WHEEL_PLATFORMS := $(foreach p,manylinux1 manylinux2014 manylinux_2_17 manylinux_2_28,--platform $(p)_x86_64)
wheelhouse:
	mkdir -p wheelhouse
	$(PYTHON) -m pip download --quiet --dest wheelhouse --no-deps --no-binary :all: $$(grep '^jittor==' requirements.txt)
	grep -v '^jittor==' requirements.txt > wheelhouse/requirements-wheels.txt
	$(PYTHON) -m pip download --quiet --dest wheelhouse --only-binary :all: --python-version $(WHEEL_PYTHON) \
		$(WHEEL_PLATFORMS) -r wheelhouse/requirements-wheels.txt astunparse setuptools wheel

clean:
	rm -rf $(VENV) $(REPORT) .pytest_cache
