"""mixtral_trt.common: the formats and helpers every stage shares, importing no other package of ours.

config (MixtralConfig, config.json / params.json), contract (graph.json), manifest (manifest.json),
backends (the backend table), quant (the weight-only quantization scheme), ort_versions (which onnxruntime
releases run which contrib-op attributes), tensor_parallel (the split
over ranks), dtypes, errors, fileio (atomic outputs, JSON), progress (rich). See docs/ARCHITECTURE.md.
"""
