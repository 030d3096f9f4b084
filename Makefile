# The two commands of the README: `make demo` (the quickstart and refine notebooks, executed) and `make test`.
# Each makes its own virtual environment in .venv with the pinned versions of constraints.txt.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT := out
READER := .venv-reader

.PHONY: demo notebooks test docs bench chromium clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) notebooks/execute.py notebooks/quickstart.ipynb notebooks/refine.ipynb --out $(OUT)

# The repository's notebooks with their outputs (pictures included), run again: after a notebook changes.
notebooks: $(VENV)/.installed
	$(PY) notebooks/execute.py notebooks/quickstart.ipynb notebooks/refine.ipynb notebooks/explore.ipynb --out $(OUT) --update

test: $(VENV)/.installed $(READER)/.installed chromium
	$(PY) -m ruff check nbbatch tests benchmarks notebooks docs
	$(PY) -m ruff format --check nbbatch tests benchmarks notebooks docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet
	$(PY) -m pytest -n auto --dist loadfile --durations=15

# The docs site (README pages, rendered notebooks, the settings and API reference) in out/site.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

# sd-prompt-reader pins an old Pillow, so the test that reads nbbatch's PNGs with it runs it from its own venv.
$(READER)/.installed: constraints-reader.txt
	$(PYTHON) -m venv $(READER)
	$(READER)/bin/python -m pip install -q -r constraints-reader.txt
	touch $@

# The browser test drives Debian's Chromium; `playwright install` cannot download here.
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) $(READER) $(OUT) .pytest_cache
