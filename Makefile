# mixtral-trt: `make demo` and `make test` from a clean clone; only Python is needed beforehand.
#
#   make demo      random tiny checkpoint -> inspect -> export -> build (ort) -> parity -> generate -> chat
#                  -> eval (fp32 engine, then an int4 engine, against one saved reference pass)
#                  (outputs in demo/)
#   make test      the test suite (GPU tests skip cleanly without CUDA + TensorRT)
#   make lint      ruff
#   make gpu-check on an NVIDIA GPU: the `gpu` extra, then TensorRT engines of the `small` preset with and
#                  without the plugins, parity, `pytest -m gpu`, a benchmark -> gpu-check.json
#
# torch is installed first, from TORCH_SPEC (and TORCH_INDEX if set, e.g. PyTorch's CPU wheel index),
# so that the package's own `torch` requirement is already satisfied by the build you chose.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
DEMO ?= demo
DEMO_PROMPT ?= Bonjour ! Explique-moi ce qu'est un mélange d'experts, en une phrase.

PY := $(VENV)/bin/python
CLI := $(VENV)/bin/mixtral-export
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean gpu-install gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev]"
	touch $@

# ---- demo: a chain of steps, each depending on the one before. A new step: add it to DEMO_STEPS
# (here, above the `demo:` rule), give it the previous step as prerequisite, and write under $(DEMO)/.
DEMO_STEPS := demo-init demo-inspect demo-export demo-build demo-parity demo-generate demo-chat demo-eval \
	demo-eval-int4
DEMO_EVAL := --text docs/eval_text.txt --ctx 256 --max-tokens 2048
.PHONY: $(DEMO_STEPS)

demo-init: $(STAMP)
	$(CLI) init --preset tiny $(DEMO)/checkpoint --seed 0 --force

demo-inspect: demo-init
	$(CLI) inspect $(DEMO)/checkpoint --chat "$(DEMO_PROMPT)" --max-new-tokens 24

demo-export: demo-inspect
	$(CLI) export $(DEMO)/checkpoint $(DEMO)/onnx --max-seq 512 --max-batch 4 --debug-outputs --force

demo-build: demo-export
	$(CLI) build $(DEMO)/onnx $(DEMO)/engine-ort --backend ort --force

demo-parity: demo-build
	$(CLI) parity $(DEMO)/engine-ort --checkpoint $(DEMO)/checkpoint --json $(DEMO)/parity.json --plot $(DEMO)/parity.png

demo-generate: demo-parity
	$(CLI) generate $(DEMO)/engine-ort --prompt "Mixtral routes each token to" --prompt "Le mélange d'experts" \
		--max-new-tokens 16 --temperature 0.7 --top-p 0.9 --seed 0

demo-chat: demo-generate
	$(CLI) chat $(DEMO)/engine-ort --message "$(DEMO_PROMPT)" --safe-mode --max-new-tokens 24

demo-eval: demo-chat
	$(CLI) eval $(DEMO)/engine-ort $(DEMO_EVAL) --reference $(DEMO)/checkpoint \
		--save-reference $(DEMO)/eval-reference.bin --json $(DEMO)/eval-fp32.json --plot $(DEMO)/eval-fp32.png

demo-eval-int4: demo-eval
	$(CLI) export $(DEMO)/checkpoint $(DEMO)/onnx-int4 --quantize int4 --max-seq 512 --max-batch 4 --debug-outputs --force
	$(CLI) build $(DEMO)/onnx-int4 $(DEMO)/engine-ort-int4 --backend ort --force
	$(CLI) eval $(DEMO)/engine-ort-int4 $(DEMO_EVAL) --reference-logits $(DEMO)/eval-reference.bin \
		--json $(DEMO)/eval-int4.json --plot $(DEMO)/eval-int4.png

demo: $(DEMO_STEPS)
	@echo "demo: done, outputs in $(DEMO)/"

# ---- checks ---------------------------------------------------------------------------------------
test: $(STAMP)
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# ---- GPU run book (NVIDIA GPU + driver) ----------------------------------------------------------------
# onnxruntime-gpu replaces onnxruntime (both write the same package folder): uninstall the CPU one, then
# reinstall the GPU one over whatever the uninstall removed.
GPU_STAMP := $(VENV)/.gpu-installed

gpu-install: $(GPU_STAMP)

$(GPU_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[gpu,dev]"
	$(PY) -m pip uninstall -y onnxruntime
	$(PY) -m pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.32"
	touch $@

gpu-check: $(GPU_STAMP)
	$(CLI) gpu-check --out gpu-check.json --workdir gpu-check

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache gpu-check gpu-check.json
