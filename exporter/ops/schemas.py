"""Register each op's ONNX `OpSchema` so onnx.checker, onnxscript and the torch exporter accept the nodes."""

from __future__ import annotations

import onnx
from onnx.defs import OpSchema

from .spec import OPS, OpSpec

_ATTR_TYPES = {
    "int": OpSchema.AttrType.INT,
    "float": OpSchema.AttrType.FLOAT,
    "string": OpSchema.AttrType.STRING,
}


def _attribute(a) -> OpSchema.Attribute:
    if a.default is None:
        return OpSchema.Attribute(a.name, _ATTR_TYPES[a.type], a.doc, required=True)
    return OpSchema.Attribute(a.name, onnx.helper.make_attribute(a.name, a.default), a.doc)


def schema_for(spec: OpSpec) -> OpSchema:
    return OpSchema(
        spec.name,
        spec.domain,
        spec.version,
        doc=spec.doc,
        inputs=[OpSchema.FormalParameter(t.name, t.type, t.doc) for t in spec.inputs],
        outputs=[OpSchema.FormalParameter(t.name, t.type, t.doc) for t in spec.outputs],
        type_constraints=[(letter, list(types), "") for letter, types in spec.type_constraints],
        attributes=[_attribute(a) for a in spec.attributes],
    )


def register_schemas() -> None:
    """Idempotent: registers every op in `OPS` once per process."""
    for spec in OPS.values():
        if not onnx.defs.has(spec.name, spec.version, spec.domain):
            onnx.defs.register_schema(schema_for(spec))
