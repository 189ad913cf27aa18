# mixtral-trt: `make demo` and `make test` from a clean clone; only Python is needed beforehand.
#
#   make demo      random tiny checkpoint -> inspect -> export -> build (ort) -> parity -> generate -> chat
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

.PHONY: install demo test lint clean gpu-install gpu-check cpu-kernels cpu-kernels-optional cpu-kernels-sanitize

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev]"
	touch $@

# ---- our CPU kernels (plugins/cpu_kernels): ONNX Runtime's headers fetched (fetch_headers.sh, or ORT_INCLUDE_DIR),
# the C++ custom-op library compiled into plugins/cpu_kernels/_build/ (skipped when up to date)
cpu-kernels: $(STAMP)
	nice -n 10 $(PY) -m mixtral_trt.plugins.cpu_kernels

# what test and demo build: where the library cannot be built (no headers, no compiler) they go on without it
# (its tests skip saying why; `build --backend ort` uses ONNX Runtime's kernels)
cpu-kernels-optional: $(STAMP)
	nice -n 10 $(PY) -m mixtral_trt.plugins.cpu_kernels || echo "cpu-kernels: not built; going on without them"

# the op tests over an AddressSanitizer + UndefinedBehaviorSanitizer build of the library (libstdc++ preloaded
# with ASan: Python does not link it, and ASan's exception interceptor needs it from the start)
cpu-kernels-sanitize: $(STAMP)
	nice -n 10 $(PY) -m mixtral_trt.plugins.cpu_kernels --sanitize
	MIXTRAL_TRT_CPU_KERNELS=$(CURDIR)/plugins/cpu_kernels/_build/sanitize/libmixtral_cpu_kernels.so \
		LD_PRELOAD="$$($${CXX:-g++} -print-file-name=libasan.so) $$($${CXX:-g++} -print-file-name=libstdc++.so)" \
		ASAN_OPTIONS=detect_leaks=0 $(PY) -m pytest -q -p no:cacheprovider tests/plugins/test_cpu_kernels.py

# ---- demo: a chain of steps, each depending on the one before. A new step: add it to DEMO_STEPS
# (here, above the `demo:` rule), give it the previous step as prerequisite, and write under $(DEMO)/.
DEMO_STEPS := demo-init demo-inspect demo-export demo-build demo-parity demo-generate demo-chat
.PHONY: $(DEMO_STEPS)

demo-init: $(STAMP) cpu-kernels-optional
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

demo: $(DEMO_STEPS)
	@echo "demo: done, outputs in $(DEMO)/"

# ---- checks ---------------------------------------------------------------------------------------
test: $(STAMP) cpu-kernels-optional
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
	rm -rf $(DEMO) .pytest_cache .ruff_cache gpu-check gpu-check.json plugins/cpu_kernels/_build
