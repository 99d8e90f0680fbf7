# Every target a new user needs: `make demo` and `make test` build the environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-cost finetune bench-pipeline test lint bench-cost bench-curves bench-pruners bench-ray bench-steps bench-ranking bench-fidelity bench-intervals bench-load bench-drift curves-data calibrate clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,ray,postgres]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python studies/cost_aware_nas.py

finetune: $(STAMP)
	$(BIN)/python studies/finetune_search.py

bench-pipeline: $(STAMP)
	$(BIN)/python scripts/bench_pipeline.py

demo-cost: $(STAMP)
	$(BIN)/python scripts/demo_cost.py

test: $(STAMP)
	$(BIN)/ruff check ttp_search tests scripts studies
	bash scripts/ensure_postgres.sh
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ttp_search tests scripts studies
	$(BIN)/ruff format --check ttp_search tests scripts studies

calibrate: $(STAMP)
	$(BIN)/ttp time calibrate

bench-cost: $(STAMP)
	$(BIN)/python scripts/bench_cost_model.py
	$(BIN)/python scripts/bench_cost_model.py --split held-out
	$(BIN)/python scripts/bench_cost_model.py --split fresh
	$(BIN)/python scripts/bench_cost_model.py --split sequence
	$(BIN)/python scripts/bench_cost_model.py --split demo

curves-data: $(STAMP)
	$(BIN)/python scripts/make_curves.py

bench-curves: $(STAMP)
	$(BIN)/python scripts/bench_curves.py

bench-pruners: $(STAMP)
	$(BIN)/python scripts/bench_pruners.py

bench-steps: $(STAMP)
	$(BIN)/python scripts/bench_steps_to_loss.py

bench-ranking: $(STAMP)
	$(BIN)/python scripts/bench_ranking.py

bench-fidelity: $(STAMP)
	$(BIN)/python scripts/bench_fidelity.py

bench-intervals: $(STAMP)
	$(BIN)/python scripts/bench_intervals.py

bench-drift: $(STAMP)
	$(BIN)/python scripts/bench_drift.py

bench-load: $(STAMP)
	bash scripts/ensure_postgres.sh
	$(BIN)/python scripts/bench_load.py

bench-ray: $(STAMP)
	$(BIN)/python scripts/bench_ray.py --live

clean-venv:
	rm -rf $(VENV)
