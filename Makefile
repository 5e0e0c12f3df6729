# vmcorepack: `make demo` packs a generated sample image; `make test` runs every check.
# The venv is built from Debian's /usr/bin/python3 with system site packages so that
# python3-libkdumpfile (a Debian package) imports in the tests.
PY ?= /usr/bin/python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out
PYTEST_ARGS ?=

.PHONY: venv pyc demo test lint unit clean install-dracut

$(BIN)/.installed: pyproject.toml setup.py src/vmcorepack/_native.c src/vmcorepack/_lzo1x.h
	$(PY) -m venv --system-site-packages $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,plot]' pytest pytest-timeout hypothesis ruff mypy drgn zstandard lz4 matplotlib
	touch $@

# Byte-compile the sources of the editable install: with PYTHONDONTWRITEBYTECODE set (as on this
# machine, and in the e2e capture kernel) every run compiled ~20 modules, 0.07 s of each start.
pyc: venv
	@$(BIN)/python -m compileall -q src

venv: $(BIN)/.installed

demo: pyc
	@mkdir -p $(OUT)
	$(BIN)/vmcorepack-mkfixture --size 256M --seed 1 -f $(OUT)/sample.vmcore
	$(BIN)/vmcorepack -f -l -d 31 --show-stats $(OUT)/sample.vmcore $(OUT)/sample.kdump
	@ls -l $(OUT)/sample.vmcore $(OUT)/sample.kdump

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

test: pyc lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The dracut module (dracut/99vmcorepack): dracut --add vmcorepack puts vmcorepack in an initramfs.
DRACUTDIR ?= /usr/lib/dracut/modules.d
install-dracut:
	install -d $(DESTDIR)$(DRACUTDIR)/99vmcorepack
	install -m 755 dracut/99vmcorepack/module-setup.sh $(DESTDIR)$(DRACUTDIR)/99vmcorepack/
	install -m 644 dracut/99vmcorepack/pyfiles.py $(DESTDIR)$(DRACUTDIR)/99vmcorepack/

unit: venv
	$(BIN)/pytest -q tests/unit

clean:
	rm -rf $(VENV) $(OUT) .cache .pytest_cache .mypy_cache .ruff_cache
