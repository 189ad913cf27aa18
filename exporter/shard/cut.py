"""Cut a rank graph at its `DistCollective` nodes: the pieces ONNX Runtime runs on CPU, with the
collectives done in between by a collective library (runtime/distributed).

Each node goes into the piece numbered by how many collectives lie on its longest path from the inputs;
a collective joins piece s to piece s + 1. A piece's inputs are the values it reads that an earlier piece,
a collective or the graph's inputs produce; its outputs are the values something later reads, and the
graph outputs it computes. Pieces are written beside the rank graph (`piece00.onnx`, ...) and reference
the rank graph's external data file, so the weights are stored once. The order to run them is
`program.json`:

    {"format": ..., "steps": [{"piece": "piece00.onnx", "inputs": [...], "outputs": [...]},
                              {"collective": "all_reduce", "input": ..., "output": ...}, ...]}
"""

from __future__ import annotations

import json
from pathlib import Path

PROGRAM_FILE = "program.json"
PROGRAM_FORMAT = "mixtral-trt.rank-program/1"
PIECE_FILE = "piece{index:02d}.onnx"


def cut_rank_graph(model_path: Path) -> Path:
    """Write the pieces of the rank graph `model_path` and its program.json beside it; returns program.json."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    types = {v.name: v for v in [*g.input, *g.output, *g.value_info]}
    stage: dict[str, int] = {}  # value -> piece that produces it (collective outputs: the next piece)
    node_stage: list[int | None] = []  # None: a collective
    collectives: list[tuple[int, dict]] = []
    for node in g.node:
        s = max((stage.get(i, 0) for i in node.input if i), default=0)
        if node.op_type == "DistCollective":
            attrs = {a.name: a for a in node.attribute}
            collectives.append((s, {"collective": attrs["collective_operation"].s.decode(),
                                    "reduce": attrs["reduce_op"].s.decode(),
                                    "input": node.input[0], "output": node.output[0]}))
            stage[node.output[0]] = s + 1
            types.setdefault(node.output[0], onnx.helper.make_value_info(node.output[0], types[node.input[0]].type))
            node_stage.append(None)
            continue
        for o in node.output:
            stage[o] = s
        node_stage.append(s)
    readers: dict[str, set[int | None]] = {}
    for node, s in zip(g.node, node_stage, strict=True):
        for i in node.input:
            readers.setdefault(i, set()).add(s)
    graph_outputs = {v.name for v in g.output}
    steps = []
    for s in range(1 + max(stage.values(), default=0)):
        nodes = [n for n, ns in zip(g.node, node_stage, strict=True) if ns == s]
        made = {o for n in nodes for o in n.output}
        read = list(dict.fromkeys(i for n in nodes for i in n.input if i))
        inputs = sorted(i for i in read if i not in made and i not in inits)
        outputs = sorted(o for o in made if o in graph_outputs or readers.get(o, set()) - {s})
        missing = [v for v in inputs + outputs if v not in types]
        if missing:
            raise RuntimeError(f"{model_path}: no type for {missing[0]} at a cut")
        piece = onnx.helper.make_graph(nodes, f"piece{s}", [types[i] for i in inputs], [types[o] for o in outputs],
                                       initializer=[inits[i] for i in read if i in inits])
        name = PIECE_FILE.format(index=s)
        onnx.save(onnx.helper.make_model(piece, opset_imports=list(m.opset_import), functions=list(m.functions),
                                         ir_version=m.ir_version), str(model_path.parent / name))
        steps.append({"piece": name, "inputs": inputs, "outputs": outputs})
        steps += [c for cs, c in collectives if cs == s]
    path = model_path.parent / PROGRAM_FILE
    path.write_text(json.dumps({"format": PROGRAM_FORMAT, "steps": steps}, indent=1) + "\n")
    return path
