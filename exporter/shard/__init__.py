"""`export --tensor-parallel N`: one graph per rank with TensorRT `DistCollective` nodes, each rank's
weights streamed into its own files. The split itself is `common/tensor_parallel.py`.

collectives.py  the collectives as torch custom ops (traced), their ONNX form (`DistCollective`)
model.py        one rank's Mixtral (the reference layers with local heads, local experts, vocabulary rows)
weights.py      one rank's share of every weight, sliced from a state dict or streamed from a checkpoint
export.py       trace once, then each rank's weights and contract into rank{r}/
cut.py          a rank graph cut at its collectives into pieces (ONNX Runtime runs them on CPU)
build.py        one engine per rank
memory.py       weights and KV cache per GPU for a world size (docs/TENSOR_PARALLEL.md's plan)
"""
