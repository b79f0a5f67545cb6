"""`PyTreeNode`: the base of every immutable pytree in dsmtheory (schedules, rules,
families, score functions, image tasks, ...), a drop-in for `flax.struct.PyTreeNode`.

Why not flax's own: `flax.struct` registers its classes with
`jax.tree_util.register_dataclass`, and in jax 0.10.x the treedefs of two
*different* such classes with the same fields and equal static values compare
equal (while their hashes differ):

    tree_structure(VPLinear()) == tree_structure(VE())     # True under flax.struct

JAX's jit cache is keyed by treedef, so whenever two cache entries' hashes
collide in the table a call with a `VE` schedule can run the executable traced
for `VPLinear` (or the ratio image task run the reflection extractor): silently
wrong numbers, different from one process to the next. It was seen here as
flaky extractor tests and reproduced with 300 sibling classes (38 dispatched to
another class's executable). Registering with explicit flatten/unflatten
functions (`register_pytree_with_keys`) gives treedefs that compare the node
type, as JAX's custom nodes always have. `tests/test_pytree.py` guards this.

Semantics kept from flax.struct: frozen dataclass; fields are pytree children
unless declared `field(pytree_node=False)` (static, part of the treedef, must be
hashable); `replace(**updates)`; unflattening calls the constructor, so
`__post_init__` runs again (on tracers inside transformations; the checks in
`_validation` skip non-concrete values).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax
from flax import serialization
from typing import dataclass_transform

__all__ = ["PyTreeNode", "field"]

_T = TypeVar("_T")


def field(pytree_node: bool = True, **kwargs: Any) -> Any:
    """A dataclass field; `pytree_node=False` makes it static (part of the treedef)."""
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata["pytree_node"] = pytree_node
    return dataclasses.field(metadata=metadata, **kwargs)


def _register(cls: type) -> None:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    data_fields = tuple(f.name for f in fields if f.metadata.get("pytree_node", True))
    meta_fields = tuple(f.name for f in fields if not f.metadata.get("pytree_node", True))
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data_fields)

    def flatten_with_keys(obj):
        children = tuple((k, getattr(obj, name)) for k, name in zip(keys, data_fields))
        return children, tuple(getattr(obj, name) for name in meta_fields)

    def flatten(obj):
        return tuple(getattr(obj, name) for name in data_fields), tuple(getattr(obj, name) for name in meta_fields)

    def unflatten(aux, children):
        return cls(**dict(zip(data_fields, children)), **dict(zip(meta_fields, aux)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)

    # flax serialization (checkpoints of objects holding such nodes), as flax.struct does
    def to_state_dict(obj):
        return {name: serialization.to_state_dict(getattr(obj, name)) for name in data_fields}

    def from_state_dict(obj, state):
        state = dict(state)
        updates = {name: serialization.from_state_dict(getattr(obj, name), state.pop(name), name=name)
                   for name in data_fields}
        if state:
            raise ValueError(f"unknown fields {sorted(state)} when restoring {cls.__name__}")
        return dataclasses.replace(obj, **updates)

    serialization.register_serialization_state(cls, to_state_dict, from_state_dict, override=True)


@dataclass_transform(field_specifiers=(field,), frozen_default=True)
class PyTreeNode:
    """Subclasses become frozen dataclasses registered as pytrees (see the module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__()
        kwargs.setdefault("frozen", True)
        dataclasses.dataclass(**kwargs)(cls)
        _register(cls)

    def replace(self: _T, **updates: Any) -> _T:
        """A copy with the given fields replaced."""
        return dataclasses.replace(self, **updates)
