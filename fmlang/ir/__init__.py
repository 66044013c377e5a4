"""The IR: the frozen, typed, resolved form of a spec (see `nodes.py`).

`build_spec(program)` builds it once the checker reported no errors;
`spec.model_dump_json()` serializes it (spans are left out, and identity ignores them too).
"""

from fmlang.ir import expr
from fmlang.ir.build import build_spec
from fmlang.ir.nodes import *  # noqa: F403
from fmlang.ir.nodes import __all__ as _node_names

__all__ = ["build_spec", "expr", *_node_names]
