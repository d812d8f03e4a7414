"""Bad input to the domain studies' Python API: one clear error naming the argument, the value and
what is expected, raised before any data is generated or any model is trained (issue 11)."""

import argparse
import dataclasses
import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec.domains import cli, deblur, fourier, gnn, lp, lp_data, pde, pde_study
from implicit_rec.domains._checks import RENAMED
from implicit_rec.domains.study import Study


def _fno(*args, **kw):
    return fourier.ImplicitFNO(*args, rngs=nnx.Rngs(0), **kw)


def _gnn(*args, **kw):
    return gnn.ImplicitGNN(*args, rngs=nnx.Rngs(0), **kw)


CASES = {
    # LPConfig via preset overrides
    "lp n_train<0": (lambda: lp.STUDY.configure("tiny", n_train=-5), ValueError, ["n_train", "-5", ">= 2"]),
    "lp epochs=0": (lambda: lp.STUDY.configure("tiny", epochs=0), ValueError, ["epochs", ">= 1"]),
    "lp dims empty": (lambda: lp.STUDY.configure("tiny", dims=()), TypeError, ["dims", "non-empty"]),
    "lp dims repeated": (lambda: lp.STUDY.configure("tiny", dims=(4, 4)), ValueError, ["dims", "more than once"]),
    "lp dims float": (lambda: lp.STUDY.configure("tiny", dims=(4, 8.5)), TypeError, ["dims[1]", "8.5"]),
    "lp val_fraction>1": (lambda: lp.STUDY.configure("tiny", val_fraction=1.5), ValueError, ["val_fraction", "1.5"]),
    "lp val_fraction=1": (
        lambda: lp.STUDY.configure("tiny", val_fraction=0.99),
        ValueError,
        ["val_fraction", "no training LPs"],
    ),
    "lp iterations decreasing": (
        lambda: lp.STUDY.configure("tiny", iterations=(3, 1)),
        ValueError,
        ["iterations", "increasing"],
    ),
    "lp ks renamed": (lambda: lp.STUDY.configure("tiny", ks=(0, 1)), TypeError, ["'ks'", "did you mean 'iterations'"]),
    "lp sweep_method": (
        lambda: lp.STUDY.configure("tiny", sweep_method="newton"),
        ValueError,
        ["sweep_method", "newton", "picard"],
    ),
    "lp learning_rate<0": (lambda: lp.STUDY.configure("tiny", learning_rate=-1), ValueError, ["learning_rate", "> 0"]),
    "lp seed<0": (lambda: lp.STUDY.configure("tiny", seed=-1), ValueError, ["seed", ">= 0"]),
    "lp gamma_self>=1": (lambda: lp.STUDY.configure("tiny", gamma_self=1.0), ValueError, ["gamma_self", "1.0"]),
    "lp feedback str": (lambda: lp.STUDY.configure("tiny", feedback="yes"), TypeError, ["feedback", "True or False"]),
    "lp spec dict": (lambda: lp.STUDY.configure("tiny", spec={"m": 3}), TypeError, ["spec", "LPSpec"]),
    "lp lipschitz_examples>n_test": (
        lambda: lp.STUDY.configure("tiny", lipschitz_examples=9),
        ValueError,
        ["lipschitz_examples", "n_test"],
    ),
    "lp nested spec": (lambda: lp.STUDY.configure("tiny", **{"spec.mm": 3}), TypeError, ["'mm'", "did you mean 'm'"]),
    "lp unknown kwarg": (lambda: lp.STUDY.configure("tiny", epoch=3), TypeError, ["'epoch'", "did you mean 'epochs'"]),
    "lp spec bound_std": (lambda: lp_data.LPSpec(bound_std=0.0), ValueError, ["bound_std", "> 0"]),
    "lp spec m bool": (lambda: lp_data.LPSpec(m=True), TypeError, ["m", "integer"]),
    "lp generate seed": (lambda: lp_data.generate(2, -1), ValueError, ["seed", "-1", ">= 0"]),
    "lp generate num float": (lambda: lp_data.generate(2.0, 0), TypeError, ["num", "integer"]),
    # DeblurConfig
    "deblur seed<0": (lambda: deblur.STUDY.configure("tiny", seed=-1), ValueError, ["seed", ">= 0"]),
    "deblur learning_rate<0": (
        lambda: deblur.STUDY.configure("tiny", learning_rate=-1),
        ValueError,
        ["learning_rate", "> 0"],
    ),
    "deblur lr renamed": (lambda: deblur.STUDY.configure("tiny", lr=1), TypeError, ["did you mean 'learning_rate'"]),
    "deblur kernel_size even": (
        lambda: deblur.STUDY.configure("tiny", kernel_size=4),
        ValueError,
        ["kernel_size", "odd", "4"],
    ),
    "deblur kernel_size>size": (
        lambda: deblur.STUDY.configure("tiny", kernel_size=17),
        ValueError,
        ["kernel_size", "size=16"],
    ),
    "deblur cnn_layers=1": (lambda: deblur.STUDY.configure("tiny", cnn_layers=1), ValueError, ["cnn_layers", ">= 2"]),
    "deblur size float": (lambda: deblur.STUDY.configure("tiny", size=1.5), TypeError, ["size", "1.5", "integer"]),
    "deblur size str": (lambda: deblur.STUDY.configure("tiny", size="16"), TypeError, ["size", "'16'", "integer"]),
    "deblur examples=0": (lambda: deblur.STUDY.configure("tiny", examples=0), ValueError, ["examples", ">= 1"]),
    "deblur train_tol<0": (lambda: deblur.STUDY.configure("tiny", train_tol=-1), ValueError, ["train_tol", "> 0"]),
    "deblur eta0=0": (lambda: deblur.STUDY.configure("tiny", eta0=0), ValueError, ["eta0", "> 0"]),
    "deblur noise nan": (lambda: deblur.STUDY.configure("tiny", noise=float("nan")), ValueError, ["noise", "finite"]),
    "deblur sigma<=0": (
        lambda: deblur.STUDY.configure("tiny", kernel_param=0.0),
        ValueError,
        ["kernel_param", "gaussian", "> 0"],
    ),
    "deblur depths str": (lambda: deblur.STUDY.configure("tiny", depths="12"), TypeError, ["depths"]),
    "deblur unknown kwarg": (
        lambda: deblur.STUDY.configure("tiny", step=3),
        TypeError,
        ["'step'", "did you mean 'steps'"],
    ),
    # PDE study
    "pde width=0": (lambda: pde_study.PDEStudyConfig(width=0), ValueError, ["width", ">= 1"]),
    "pde grad": (lambda: pde_study.PDEStudyConfig(grad="magic"), ValueError, ["grad", "magic", "ift"]),
    "pde gamma>1": (lambda: pde_study.PDEStudyConfig(gamma=1.5), ValueError, ["gamma", "1.5"]),
    "pde iterations str": (lambda: pde_study.PDEStudyConfig(iterations="012"), TypeError, ["iterations", "'012'"]),
    "pde n odd": (lambda: pde_study.STUDY.configure("tiny", n=9), ValueError, ["n must be even"]),
    "pde unknown preset": (lambda: pde_study.STUDY.configure("huge"), ValueError, ["'huge'", "tiny"]),
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
    cfg = lp.STUDY.configure("tiny", dims=[np.int64(4)], iterations=[0, np.int64(2)], learning_rate=1)
    assert cfg.dims == (4,) and type(cfg.dims[0]) is int and cfg.iterations == (0, 2) and cfg.learning_rate == 1.0
    assert lp.STUDY.configure("tiny", **{"spec.m": 12}).spec.m == 12
    for study in (lp.STUDY, deblur.STUDY, pde_study.STUDY):
        for name in study.presets:
            assert study.configure(name) == study.presets[name]
    assert pde_study.PDEStudyConfig(gamma=None).gamma is None
    u, info = pde.solve(np.ones((1, 8, 8)), np.ones((1, 8, 8)), tol=1e-8, max_newton=5)
    assert info.residual.max() <= 1e-8


# -- the one Study shape and the one command line -----------------------------------------------------
STUDIES = {"lp": lp.STUDY, "deblur": deblur.STUDY, "pde": pde_study.STUDY}


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_domain_has_the_same_study_shape(name):
    study = STUDIES[name]
    assert isinstance(study, Study) and study.name == name and cli.load(name) is study
    assert dataclasses.is_dataclass(study.config) and study.config.__dataclass_params__.frozen
    assert {"tiny", "default"} <= set(study.presets)
    assert all(type(c) is study.config for c in study.presets.values())
    fields = {f.name for f in dataclasses.fields(study.config)}
    assert {"iterations", "lipschitz_examples", "lipschitz_perturbations", "lipschitz_scale", "seed"} <= fields
    assert {"learning_rate"} <= fields and not fields & set(RENAMED)
    assert list(inspect.signature(study.compute).parameters) == ["cfg", "cache_dir", "log"]
    assert len(inspect.signature(study.report).parameters) == 1
    assert len(inspect.signature(study.plots).parameters) == 2
    with pytest.raises(TypeError, match=f"config must be a {study.config.__name__}"):
        study.run({"seed": 0}, "unused")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["lp", "--preset", "tiny", "--set", "epoch=2"], ["'epoch'", "did you mean 'epochs'"]),
        (["pde", "--set", "ks=0,1"], ["'ks' was renamed", "did you mean 'iterations'"]),
        (["deblur", "--set", "lr=0.1"], ["'lr' was renamed", "did you mean 'learning_rate'"]),
        (["lp", "--set", "spec.mm=3"], ["'mm'", "did you mean 'm'"]),
        (["lp", "--set", "epochs"], ["--set 'epochs'", "KEY=VALUE"]),
        (["lp", "--set", "epochs=0"], ["epochs", ">= 1"]),
        (["deblur", "--set", "iterations=4,2"], ["iterations", "increasing"]),
        (["pde", "--preset", "huge"], ["--preset 'huge' is not known", "tiny"]),
        (["pde", "--seed", "-1"], ["--seed", ">= 0"]),
        (["fluid"], ["invalid choice: 'fluid'"]),
    ],
)
def test_cli_bad_input_is_a_usage_error_before_any_output(argv, words, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--out", str(out), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert all(w in err for w in words), err
    assert not out.exists()


def test_cli_values_are_typed_after_the_preset():
    study = lp.STUDY
    values = cli.overrides(study, "tiny", ["iterations=0,2,8", "dims=4", "feedback=false", "sweep_method=picard"])
    assert values == {"iterations": (0, 2, 8), "dims": (4,), "feedback": False, "sweep_method": "picard"}
    cfg = study.configure("tiny", **values, **cli.overrides(study, "tiny", ["spec.m=12", "learning_rate=1e-3"]))
    assert (cfg.iterations, cfg.dims, cfg.feedback, cfg.spec.m, cfg.learning_rate) == ((0, 2, 8), (4,), False, 12, 1e-3)
    assert cli.overrides(pde_study.STUDY, "tiny", ["gamma=none"]) == {"gamma": None}


def test_cli_registers_on_another_command_line():
    parser = argparse.ArgumentParser(prog="implicit-rec")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["domain", "pde", "--preset", "tiny", "--set", "epochs=1", "--seed", "3"])
    assert args.func is cli.run and args.name == "pde"
    study, cfg = cli.configure(args)
    assert study is pde_study.STUDY and (cfg.epochs, cfg.seed, cfg.n) == (1, 3, 16)


def test_cli_turns_the_compile_cache_on_and_off_like_implicit_rec(tmp_path, monkeypatch, capsys):
    """``python -m implicit_rec.domains`` enables the persistent compilation cache as ``implicit-rec`` does
    (the directory of ``$IMPLICIT_REC_JAX_CACHE``); ``--no-compile-cache`` turns it off for the process
    and, through the environment, for the processes it starts."""
    previous = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)
    for var in ("JAX_COMPILATION_CACHE_DIR", "IMPLICIT_REC_JAX_CACHE"):
        monkeypatch.delenv(var, raising=False)
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv("IMPLICIT_REC_JAX_CACHE", str(tmp_path / "jax"))
        with pytest.raises(SystemExit):  # a usage error after the cache is set up: nothing is computed
            cli.main(["lp", "--set", "epochs=0", "--out", str(tmp_path / "a"), "--quiet"])
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax") and (tmp_path / "jax").is_dir()
        with pytest.raises(SystemExit):
            cli.main(["lp", "--set", "epochs=0", "--out", str(tmp_path / "b"), "--quiet", "--no-compile-cache"])
        assert os.environ["IMPLICIT_REC_JAX_CACHE"] == "off" and not jax.config.jax_enable_compilation_cache
    finally:
        jax.config.update("jax_compilation_cache_dir", previous[0])
        jax.config.update("jax_enable_compilation_cache", previous[1])
    capsys.readouterr()
