# odm_mm: the two commands of the README's Quick start, plus helpers.
# Both create/reuse .venv and install what they need (idempotent).
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: install demo test bench clean-venv

install:
	bash scripts/setup_env.sh

# the demo installs quietly (log in .venv/setup_env.log, tail shown on failure)
demo:
	@bash scripts/setup_env.sh --quiet
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) tools/benchmark.py --preset quick

clean-venv:
	rm -rf .venv
