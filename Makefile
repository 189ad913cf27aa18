# mixtral-trt: `make demo` and `make test` from a clean clone; only Python is needed beforehand.
#
#   make demo      random tiny checkpoint -> inspect -> export -> build (ort) -> parity -> generate -> chat
#                  -> eval (fp32 engine, then an int4 engine, against one saved reference pass)
#                  (outputs in demo/)
#   make test      the test suite (GPU tests skip cleanly without CUDA + TensorRT)
#   make lint      ruff
#   make gpu-check on an NVIDIA GPU: the `gpu` extra (in GPU_VENV, over the machine's packages), then TensorRT engines of the `small` preset with and
#                  without the plugins, parity, `pytest -m gpu`, a benchmark -> gpu-check.json
#   make device-check  on a bare CUDA machine (torch, triton, numpy; no TensorRT, pip, venv or network), from the
#                  plain checkout: kernels, TensorRT's recorded launch contract, the plugin chain ->
#                  device-check/device_check.json (CPU stand-ins without a GPU)
#   make device-check-launches  on a CPU machine with the dev extra: the launch file phase 3 replays
#                  (device-check-launches/, ~6 MiB: bring it along with the checkout)
#   make plugins-spills  every default AOT kernel variant assembled by ptxas -v for sm_90a and sm_80: registers,
#                  spills, shared memory (plugins-spills.json; exit 1 if any spills; no GPU needed)
#
#   make lock      newest releases within pyproject's ranges in a fresh venv (.lock-venv), the suite run there,
#                  adopted into locks/<python>-<platform>.txt only if it passes; locks/CHANGES.md records it
#
# torch is installed first, from TORCH_SPEC (and TORCH_INDEX if set, e.g. PyTorch's CPU wheel index),
# so that the package's own `torch` requirement is already satisfied by the build you chose. Every install
# is constrained by the lock of this Python and platform (exact versions the suite passed with) when one
# exists; USE_LOCK=0 installs the newest releases pyproject.toml's ranges allow instead.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
DEMO ?= demo
DEMO_PROMPT ?= Bonjour ! Explique-moi ce qu'est un mélange d'experts, en une phrase.

USE_LOCK ?= 1
LOCK ?= locks/$(shell $(PYTHON) tools/lock.py tag).txt
LOCK_VENV ?= .lock-venv

PY := $(VENV)/bin/python
CLI := $(VENV)/bin/mixtral-export
STAMP := $(VENV)/.installed
CONSTRAINTS := $(if $(filter 1,$(USE_LOCK)),$(wildcard $(LOCK)))
PIP_INSTALL = $(PY) -m pip install $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: install demo test lint lock clean gpu-install gpu-check device-check device-check-launches plugins-spills cpu-kernels \
	cpu-kernels-optional cpu-kernels-sanitize

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(CONSTRAINTS)
	$(if $(CONSTRAINTS),@echo "install: exact versions from $(CONSTRAINTS)",\
	  @echo "install: no lock used ($(if $(filter 1,$(USE_LOCK)),$(LOCK) does not exist,USE_LOCK=$(USE_LOCK))): newest releases within pyproject.toml's ranges")
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP_INSTALL) -e ".[dev,trt-cpu,eval-harness]"
	echo "$(CONSTRAINTS)" > $@  # the lock this venv was installed from (tests/tools/test_lock.py reads it)

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
		ASAN_OPTIONS=detect_leaks=0 $(PY) -m pytest -q -p no:cacheprovider tests/plugins/test_cpu_kernels.py \
		tests/plugins/test_cpu_kernels_linear.py tests/plugins/test_cpu_kernels_attention.py

# ---- demo: a chain of steps, each depending on the one before. A new step: add it to DEMO_STEPS
# (here, above the `demo:` rule), give it the previous step as prerequisite, and write under $(DEMO)/.
DEMO_STEPS := demo-init demo-inspect demo-export demo-build demo-parity demo-generate demo-chat demo-eval \
	demo-eval-int4
DEMO_EVAL := --text docs/eval_text.txt --ctx 256 --max-tokens 2048
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
test: $(STAMP) cpu-kernels-optional
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) install VENV=$(LOCK_VENV) USE_LOCK=0
	$(LOCK_VENV)/bin/python tools/lock.py freeze > $(LOCK_VENV)/candidate.txt
	set -o pipefail; status=0; \
	$(MAKE) test VENV=$(LOCK_VENV) USE_LOCK=0 2>&1 | tee $(LOCK_VENV)/pytest.log || status=$$?; \
	$(PYTHON) tools/lock.py adopt --lock $(LOCK) --candidate $(LOCK_VENV)/candidate.txt \
		--log $(LOCK_VENV)/pytest.log --status $$status

# ---- GPU run book (NVIDIA GPU + driver) ----------------------------------------------------------------
# A venv over the machine's own packages (its CUDA torch, TensorRT, CUDA libraries stay as they are), this package
# with --no-deps, then the `gpu` and `dev` extras' requirements as bench/install_plan.py lists them: onnxruntime-gpu
# in place of onnxruntime (both write one package folder), never the `trt-cpu` stand-ins (tensorrt-cu13-bindings
# would overwrite the bindings of the machine's TensorRT).
GPU_VENV ?= .venv-gpu
GPU_STAMP := $(GPU_VENV)/.gpu-installed

gpu-install: $(GPU_STAMP)

$(GPU_STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --no-deps -e .
	$(GPU_VENV)/bin/python -m mixtral_trt.bench.install_plan gpu dev > $(GPU_VENV)/gpu-requirements.txt
	$(GPU_VENV)/bin/python -m pip install -r $(GPU_VENV)/gpu-requirements.txt
	touch $@

gpu-check: $(GPU_STAMP)
	$(GPU_VENV)/bin/mixtral-export gpu-check --out gpu-check.json --workdir gpu-check

# ---- device check: needs no venv (PYTHON with torch, triton, numpy), the checkout on PYTHONPATH --------
DEVICE_CHECK_ARGS ?=

device-check:
	PYTHONPATH=tools/pythonpath $(PYTHON) -m mixtral_trt.bench.device_check --out device-check $(DEVICE_CHECK_ARGS)

device-check-launches: $(STAMP)
	nice -n 10 $(PY) tools/record_launches.py --out device-check-launches --force

plugins-spills: $(STAMP)
	nice -n 10 $(VENV)/bin/mixtral-export plugins spills --arch sm_90a,sm_80 --jobs 2 --json plugins-spills.json

clean:
	rm -rf $(DEMO) $(LOCK_VENV) .pytest_cache .ruff_cache gpu-check gpu-check.json device-check plugins-spills.json plugins/cpu_kernels/_build
