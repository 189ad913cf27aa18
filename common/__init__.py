"""mixtral_trt.common: the formats and helpers every stage shares, importing no other package of ours.

config (MixtralConfig, config.json / params.json), contract (graph.json), manifest (manifest.json),
backends (the backend table), quant (the weight-only quantization scheme), tensor_parallel (the split
over ranks), dtypes, errors, fileio (atomic outputs, JSON), progress (rich). See docs/ARCHITECTURE.md.
"""
