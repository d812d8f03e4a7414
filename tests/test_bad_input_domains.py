"""Bad input to the domain studies' Python API: one clear error naming the argument, the value and
what is expected, raised before any data is generated or any model is trained (issue 11)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec.domains import deblur, fourier, gnn, lp, lp_data, pde, pde_study, sweep


def _fno(*args, **kw):
    return fourier.ImplicitFNO(*args, rngs=nnx.Rngs(0), **kw)


def _gnn(*args, **kw):
    return gnn.ImplicitGNN(*args, rngs=nnx.Rngs(0), **kw)


CASES = {
    # LPConfig via preset overrides
    "lp n_train<0": (lambda: lp.preset("tiny", n_train=-5), ValueError, ["n_train", "-5", ">= 2"]),
    "lp epochs=0": (lambda: lp.preset("tiny", epochs=0), ValueError, ["epochs", ">= 1"]),
    "lp dims empty": (lambda: lp.preset("tiny", dims=()), TypeError, ["dims", "non-empty"]),
    "lp dims repeated": (lambda: lp.preset("tiny", dims=(4, 4)), ValueError, ["dims", "more than once"]),
    "lp dims float": (lambda: lp.preset("tiny", dims=(4, 8.5)), TypeError, ["dims[1]", "8.5"]),
    "lp val_fraction>1": (lambda: lp.preset("tiny", val_fraction=1.5), ValueError, ["val_fraction", "1.5"]),
    "lp val_fraction=1": (
        lambda: lp.preset("tiny", val_fraction=0.99),
        ValueError,
        ["val_fraction", "no training LPs"],
    ),
    "lp ks decreasing": (lambda: lp.preset("tiny", ks=(3, 1)), ValueError, ["ks", "increasing"]),
    "lp sweep_method": (
        lambda: lp.preset("tiny", sweep_method="newton"),
        ValueError,
        ["sweep_method", "newton", "picard"],
    ),
    "lp learning_rate<0": (lambda: lp.preset("tiny", learning_rate=-1), ValueError, ["learning_rate", "> 0"]),
    "lp seed<0": (lambda: lp.preset("tiny", seed=-1), ValueError, ["seed", ">= 0"]),
    "lp gamma_self>=1": (lambda: lp.preset("tiny", gamma_self=1.0), ValueError, ["gamma_self", "1.0"]),
    "lp feedback str": (lambda: lp.preset("tiny", feedback="yes"), TypeError, ["feedback", "True or False"]),
    "lp spec dict": (lambda: lp.preset("tiny", spec={"m": 3}), TypeError, ["spec", "LPSpec"]),
    "lp lip_samples>n_test": (lambda: lp.preset("tiny", lip_samples=9), ValueError, ["lip_samples", "n_test"]),
    "lp unknown kwarg": (lambda: lp.preset("tiny", epoch=3), TypeError, ["'epoch'", "did you mean 'epochs'"]),
    "lp spec bound_std": (lambda: lp_data.LPSpec(bound_std=0.0), ValueError, ["bound_std", "> 0"]),
    "lp spec m bool": (lambda: lp_data.LPSpec(m=True), TypeError, ["m", "integer"]),
    "lp generate seed": (lambda: lp_data.generate(2, -1), ValueError, ["seed", "-1", ">= 0"]),
    "lp generate num float": (lambda: lp_data.generate(2.0, 0), TypeError, ["num", "integer"]),
    # DeblurConfig
    "deblur seed<0": (lambda: deblur.preset("tiny", seed=-1), ValueError, ["seed", ">= 0"]),
    "deblur lr<0": (lambda: deblur.preset("tiny", lr=-1), ValueError, ["lr", "> 0"]),
    "deblur kernel_size even": (lambda: deblur.preset("tiny", kernel_size=4), ValueError, ["kernel_size", "odd", "4"]),
    "deblur kernel_size>size": (lambda: deblur.preset("tiny", kernel_size=17), ValueError, ["kernel_size", "size=16"]),
    "deblur cnn_layers=1": (lambda: deblur.preset("tiny", cnn_layers=1), ValueError, ["cnn_layers", ">= 2"]),
    "deblur size float": (lambda: deblur.preset("tiny", size=1.5), TypeError, ["size", "1.5", "integer"]),
    "deblur size str": (lambda: deblur.preset("tiny", size="16"), TypeError, ["size", "'16'", "integer"]),
    "deblur examples=0": (lambda: deblur.preset("tiny", examples=0), ValueError, ["examples", ">= 1"]),
    "deblur train_tol<0": (lambda: deblur.preset("tiny", train_tol=-1), ValueError, ["train_tol", "> 0"]),
    "deblur eta0=0": (lambda: deblur.preset("tiny", eta0=0), ValueError, ["eta0", "> 0"]),
    "deblur noise nan": (lambda: deblur.preset("tiny", noise=float("nan")), ValueError, ["noise", "finite"]),
    "deblur sigma<=0": (
        lambda: deblur.preset("tiny", kernel_param=0.0),
        ValueError,
        ["kernel_param", "gaussian", "> 0"],
    ),
    "deblur depths str": (lambda: deblur.preset("tiny", depths="12"), TypeError, ["depths"]),
    "deblur unknown kwarg": (lambda: deblur.preset("tiny", step=3), TypeError, ["'step'", "did you mean 'steps'"]),
    # PDE study
    "pde width=0": (lambda: pde_study.StudyConfig(width=0), ValueError, ["width", ">= 1"]),
    "pde grad": (lambda: pde_study.StudyConfig(grad="magic"), ValueError, ["grad", "magic", "ift"]),
    "pde gamma>1": (lambda: pde_study.StudyConfig(gamma=1.5), ValueError, ["gamma", "1.5"]),
    "pde ks str": (lambda: pde_study.StudyConfig(ks="012"), TypeError, ["ks", "'012'"]),
    "pde config seed<0": (lambda: pde.PDEConfig(seed=-1), ValueError, ["seed", ">= 0"]),
    "pde config n float": (lambda: pde.PDEConfig(n=16.0), TypeError, ["n", "integer"]),
    # models
    "fno width=0": (lambda: _fno(16, 2, 0, 4), ValueError, ["width", ">= 1", "0"]),
    "fno c_in=0": (lambda: _fno(16, 0, 4, 4), ValueError, ["c_in", ">= 1"]),
    "fno hidden=0": (lambda: _fno(16, 2, 4, 4, hidden=0), ValueError, ["hidden", ">= 1"]),
    "explicit fno width=0": (lambda: fourier.ExplicitFNO(16, 2, 0, 4, rngs=nnx.Rngs(0)), ValueError, ["width", ">= 1"]),
    "fno wrong grid": (
        lambda: _fno(8, 2, 4, 2)(jnp.zeros((3, 16, 16, 2))),
        ValueError,
        ["(B, 8, 8, 2)", "(3, 16, 16, 2)"],
    ),
    "fno wrong channels": (
        lambda: _fno(8, 2, 4, 2)(jnp.zeros((3, 8, 8, 3))),
        ValueError,
        ["(B, 8, 8, 2)", "(3, 8, 8, 3)"],
    ),
    "fno trajectory wrong grid": (
        lambda: _fno(8, 2, 4, 2).trajectory(jnp.zeros((3, 8, 8)), 2),
        ValueError,
        ["(B, 8, 8, 2)", "(3, 8, 8)"],
    ),
    "explicit fno wrong grid": (
        lambda: fourier.ExplicitFNO(8, 2, 4, 2, rngs=nnx.Rngs(0))(jnp.zeros((1, 6, 6, 2))),
        ValueError,
        ["(B, 8, 8, 2)", "(1, 6, 6, 2)"],
    ),
    "gnn d=0": (lambda: _gnn(0, 3, 5), ValueError, ["d", ">= 1"]),
    "gnn m=0": (lambda: _gnn(4, 0, 5), ValueError, ["m", ">= 1"]),
    "explicit gnn d=0": (lambda: gnn.ExplicitGNN(0, rngs=nnx.Rngs(0)), ValueError, ["d", ">= 1"]),
    "gnn missing key": (lambda: _gnn(2, 3, 5)({"A": jnp.zeros((1, 3, 5))}), ValueError, ["keys", "'b'"]),
    "explicit gnn missing key": (
        lambda: gnn.ExplicitGNN(2, rngs=nnx.Rngs(0))({"A": jnp.zeros((1, 3, 5))}),
        ValueError,
        ["keys", "'b'"],
    ),
    "gnn wrong m": (lambda: _gnn(2, 3, 5)(_lp_batch(4, 5)), ValueError, ["A", "(B, 3, 5)", "(1, 4, 5)"]),
    "gnn A 2-d": (
        lambda: gnn.check_inputs({**_lp_batch(3, 5), "A": jnp.zeros((3, 5))}),
        ValueError,
        ["A", "(B, m, n)", "(3, 5)"],
    ),
    # reference PDE solver
    "solve nan a": (lambda: pde.solve(_nan_field(), np.ones((1, 8, 8))), ValueError, ["a", "finite"]),
    "solve nan f": (lambda: pde.solve(np.ones((1, 8, 8)), _nan_field()), ValueError, ["f", "finite"]),
    "solve tol<0": (lambda: pde.solve(np.ones((1, 8, 8)), np.ones((1, 8, 8)), tol=-1), ValueError, ["tol", "> 0"]),
    "solve max_newton=0": (
        lambda: pde.solve(np.ones((1, 8, 8)), np.ones((1, 8, 8)), max_newton=0),
        ValueError,
        ["max_newton", ">= 1"],
    ),
    "solve max_cg float": (
        lambda: pde.solve(np.ones((1, 8, 8)), np.ones((1, 8, 8)), max_cg=2.5),
        TypeError,
        ["max_cg", "integer"],
    ),
    # sweep iteration counts
    "ks fraction": (lambda: sweep.check_ks([0, 1.5]), TypeError, ["ks[1]", "1.5"]),
    "ks string": (lambda: sweep.check_ks("012"), TypeError, ["ks", "'012'"]),
    "ks bool": (lambda: sweep.check_ks([True, 2]), TypeError, ["ks[0]"]),
}


def _nan_field():
    a = np.ones((1, 8, 8))
    a[0, 2, 3] = np.nan
    return a


def _lp_batch(m, n):
    return {
        "A": jnp.zeros((1, m, n)),
        "b": jnp.zeros((1, m)),
        "eq": jnp.zeros((1, m)),
        "c": jnp.zeros((1, n)),
        "l": jnp.zeros((1, n)),
        "u": jnp.ones((1, n)),
    }


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error(name):
    make, error, needles = CASES[name]
    with pytest.raises(error) as info:
        make()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_good_values_are_normalized_and_presets_stay_valid():
    cfg = lp.preset("tiny", dims=[np.int64(4)], ks=[0, np.int64(2)], learning_rate=1)
    assert cfg.dims == (4,) and type(cfg.dims[0]) is int and cfg.ks == (0, 2) and cfg.learning_rate == 1.0
    assert sweep.check_ks(np.arange(3)) == (0, 1, 2)
    for name in lp.PRESETS:
        lp.preset(name)
    for name in deblur.PRESETS:
        deblur.preset(name)
    for name in pde_study.PRESETS:
        pde_study.preset(name)
    assert pde_study.StudyConfig(gamma=None).gamma is None
    u, info = pde.solve(np.ones((1, 8, 8)), np.ones((1, 8, 8)), tol=1e-8, max_newton=5)
    assert info.residual.max() <= 1e-8
