"""The pytree base class (dsmtheory/_pytree.py): distinct classes never share a jit executable.

Under flax.struct (jax.tree_util.register_dataclass) the treedefs of two different
classes with equal static data compare equal in jax 0.10.x, so jit's cache can dispatch
a call to the executable traced for another class; these tests fail in that setting.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsmtheory import schedules
from dsmtheory._pytree import PyTreeNode, field
from dsmtheory.images import TASKS, get_task


def test_library_classes_with_the_same_fields_have_distinct_treedefs():
    objects = [schedules.VPLinear(), schedules.VPCosine(), schedules.VE(), schedules.EDM()]
    objects += [get_task(name) for name in sorted(TASKS)]
    defs = [jax.tree_util.tree_structure(o) for o in objects]
    for (a, da), (b, db) in itertools.combinations(zip(objects, defs), 2):
        assert da != db, f"{type(a).__name__} and {type(b).__name__} share a treedef"
    # equal objects of one class do share it (one compilation, not one per instance)
    assert jax.tree_util.tree_structure(schedules.VE()) == defs[2]


def test_jit_dispatches_each_class_to_its_own_executable():
    classes = [type(f"Sibling{i}", (PyTreeNode,), {"__annotations__": {"a": float}, "a": 1.0,
                                                   "value": (lambda i: lambda self: self.a * i)(i)})
               for i in range(100)]
    run = jax.jit(lambda obj: obj.value())
    got = np.array([float(run(cls())) for cls in classes] + [float(run(cls())) for cls in classes])
    np.testing.assert_array_equal(got, np.tile(np.arange(100.0), 2))


def test_static_fields_replace_and_post_init():
    class Node(PyTreeNode):
        w: jax.Array
        tag: str = field(pytree_node=False, default="a")

        def __post_init__(self):
            if not isinstance(self.tag, str):
                raise TypeError("tag must be a string")

    node = Node(jnp.ones(3))
    leaves, treedef = jax.tree_util.tree_flatten(node)
    assert len(leaves) == 1 and treedef != jax.tree_util.tree_structure(node.replace(tag="b"))
    doubled = jax.jit(lambda n: n.replace(w=2 * n.w))(node)
    assert isinstance(doubled, Node) and doubled.tag == "a"
    np.testing.assert_array_equal(doubled.w, 2.0)
    with pytest.raises(TypeError, match="tag"):
        Node(jnp.ones(3), tag=1)
    with pytest.raises(AttributeError):
        node.w = jnp.zeros(3)  # frozen
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(node)[0]]
    assert paths == [".w"]
