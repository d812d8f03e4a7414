"""Save and restore the state of an NNX module as msgpack (no pickle), written atomically.

The file holds every Variable of the module (parameters, power-iteration vectors,
counters) except random-number state, as a nested dict of arrays. Restoring
into a module built with the same constructor arguments reproduces its outputs
exactly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

_KEEP = nnx.Not(nnx.RngState)


def save_state(module: nnx.Module, path: str | os.PathLike) -> Path:
    """Write the module's state to ``path`` (atomic: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pure = nnx.to_pure_dict(nnx.state(module, _KEEP))
    data = serialization.msgpack_serialize(jax.tree.map(np.asarray, pure))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def restore_state(module: nnx.Module, path: str | os.PathLike) -> nnx.Module:
    """Load ``path`` into ``module`` in place (and return it).

    Raises FileNotFoundError for a missing file and ValueError naming the first
    entry whose presence or shape differs from the module's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        loaded = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types
        raise ValueError(f"{path} is not a msgpack checkpoint written by save_state: {err}") from err
    state = nnx.state(module, _KEEP)
    expected = nnx.to_pure_dict(state)
    _check_same_layout(expected, loaded, path)
    nnx.replace_by_pure_dict(state, loaded)
    nnx.update(module, state)
    return module


def _check_same_layout(expected, loaded, path, prefix=""):
    if isinstance(expected, dict):
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: entry '{prefix or '/'}' should be a group of arrays.")
        exp_keys = {str(k) for k in expected}
        got_keys = set(loaded)
        if exp_keys != got_keys:
            missing, extra = sorted(exp_keys - got_keys), sorted(got_keys - exp_keys)
            raise ValueError(f"{path}: checkpoint does not match the module at '{prefix or '/'}' "
                             f"(missing {missing}, unexpected {extra}); was it saved from a module "
                             "built with the same arguments?")
        for key, value in expected.items():
            _check_same_layout(value, loaded[str(key)], path, f"{prefix}/{key}")
        return
    if np.shape(expected) != np.shape(loaded):
        raise ValueError(f"{path}: entry '{prefix}' has shape {np.shape(loaded)} in the checkpoint but "
                         f"{np.shape(expected)} in the module.")
