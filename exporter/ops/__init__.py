"""The canonical custom ops `mixtral::MoERouter` and `mixtral::MoEExperts`: spec, ONNX schema, function
body and torch translation. Importing this package registers the schemas with onnx."""

from .schemas import register_schemas
from .spec import DOMAIN, MOE_EXPERTS, MOE_EXPERTS_Q, MOE_ROUTER, OPS, OpSpec

register_schemas()

__all__ = ["DOMAIN", "MOE_EXPERTS", "MOE_EXPERTS_Q", "MOE_ROUTER", "OPS", "OpSpec", "register_schemas"]
