# odm_mm: the two commands of the README's Quick start, plus helpers.
# Both create/reuse .venv and install what they need (idempotent).
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: install demo test bench clean-venv

install:
	bash scripts/setup_env.sh

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) tools/benchmark.py --preset quick

clean-venv:
	rm -rf .venv
