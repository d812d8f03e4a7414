"""Save and restore the state of an NNX module as msgpack (no pickle), written atomically.

The file holds every Variable of the module (parameters, power-iteration vectors,
counters) except random-number state, as a nested dict of arrays. Restoring
into a module built with the same constructor arguments reproduces its outputs
exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
import numpy as np
from flax import nnx, serialization

from .atomic import write_bytes_atomic

_KEEP = nnx.Not(nnx.RngState)
M = TypeVar("M", bound=nnx.Module)


def save_state(module: nnx.Module, path: str | os.PathLike) -> Path:
    """Write the module's state to ``path`` (atomic: a temporary file renamed into place)."""
    return save_tree(path, nnx.to_pure_dict(nnx.state(module, _KEEP)))


def save_tree(path: str | os.PathLike, tree) -> Path:
    """Write a nested dict of arrays / numbers / strings to ``path`` as msgpack, atomically.

    Keys are written as strings: a module's pure dict has int keys for list entries and optimizer
    state tuples, which flax < 0.12.8 cannot read back (msgpack's strict map keys); the readers here
    match keys by their string form (:func:`conform`)."""
    data = serialization.msgpack_serialize(
        _str_keys(jax.tree.map(lambda x: x if isinstance(x, (str, bytes, int, float)) else np.asarray(x), tree))
    )
    return write_bytes_atomic(path, data)


def _str_keys(tree):
    """``tree`` with every dict key turned into its string form."""
    if isinstance(tree, dict):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, or saved from another model); says how to recover."""


def load_tree(path: str | os.PathLike) -> dict:
    """Read a file written by :func:`save_tree` (ValueError if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types
        raise ValueError(f"{path} is not a msgpack checkpoint written by save_state: {err}") from err


def restore_state(module: nnx.Module, path: str | os.PathLike) -> nnx.Module:
    """Load ``path`` into ``module`` in place (and return it).

    Raises FileNotFoundError for a missing file and ValueError naming the first
    entry whose presence or shape differs from the module's.
    """
    loaded = load_tree(path)
    state = nnx.state(module, _KEEP)
    expected = nnx.to_pure_dict(state)
    loaded = _check_same_layout(expected, loaded, path)
    nnx.replace_by_pure_dict(state, loaded)
    nnx.update(module, state)
    return module


def load_module(build: Callable[[], M], path: str | os.PathLike) -> M:
    """The module ``build()`` with the state saved in ``path``, built without running its initialisers.

    ``build`` is traced abstractly (``nnx.eval_shape``): no parameter is drawn, so nothing is compiled
    for the initialisers that the checkpoint overwrites (eager initialisation compiles one program
    per parameter shape). The file holds no random-number state: the module's RNG streams are fresh
    (key 0, counts 0), as after ``restore_state`` on a newly built module they continue from its
    construction. Errors as :func:`restore_state`.
    """
    module = nnx.eval_shape(build)
    nnx.update(module, jax.tree.map(_fresh_rng, nnx.state(module, nnx.RngState)))
    return restore_state(module, path)


def _fresh_rng(leaf: jax.ShapeDtypeStruct) -> jax.Array:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.random.split(jax.random.key(0), leaf.shape) if leaf.shape else jax.random.key(0)
    return np.zeros(leaf.shape, leaf.dtype)


def conform(expected: dict, loaded: dict, where: str = "checkpoint") -> dict:
    """Check that ``loaded`` has the layout of the pure dict ``expected`` and return it with
    ``expected``'s key types (ValueError naming the first differing entry)."""
    return _check_same_layout(expected, loaded, where)


def _check_same_layout(expected, loaded, path, prefix=""):
    """``loaded`` with the module's key types (msgpack may turn list indices into str or int)."""
    if isinstance(expected, dict):
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: entry '{prefix or '/'}' should be a group of arrays.")
        exp_keys = {str(k) for k in expected}
        loaded = {str(k): v for k, v in loaded.items()}
        got_keys = set(loaded)
        if exp_keys != got_keys:
            missing, extra = sorted(exp_keys - got_keys), sorted(got_keys - exp_keys)
            raise ValueError(
                f"{path}: checkpoint does not match the module at '{prefix or '/'}' "
                f"(missing {missing}, unexpected {extra}); was it saved from a module "
                "built with the same arguments?"
            )
        return {
            key: _check_same_layout(value, loaded[str(key)], path, f"{prefix}/{key}") for key, value in expected.items()
        }
    if np.shape(expected) != np.shape(loaded):
        raise ValueError(
            f"{path}: entry '{prefix}' has shape {np.shape(loaded)} in the checkpoint but "
            f"{np.shape(expected)} in the module."
        )
    return loaded
