"""Explicit baselines matched to an implicit VM: the transformer stack, the width chooser, the keys, a run."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec import config, pipeline, report
from implicit_rec.config import TRANSFERS, ConfigError
from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.loopfm import baselines
from implicit_rec.loopfm.batches import vm_batches
from implicit_rec.loopfm.store import HistoricalStore
from implicit_rec.models.stacks import TransformerStack
from implicit_rec.params import count_params

E, D_CONTEXT, L = 4, 5, 6
_stack = nnx.jit(lambda m, x: m(x))


def _stack_input(seed=0, batch=3, length=L):
    rng = np.random.default_rng(seed)
    mask = rng.random((batch, length)) < 0.6
    mask[0] = False  # a row without events
    mask[1] = True  # a full row
    return {
        "sequence": jnp.asarray(rng.normal(size=(batch, length, E)), jnp.float32),
        "mask": jnp.asarray(mask),
        "context": jnp.asarray(rng.normal(size=(batch, D_CONTEXT)), jnp.float32),
    }


@pytest.fixture(scope="module")
def stack():
    return TransformerStack(D_CONTEXT, E, 8, 2, num_heads=2, rngs=nnx.Rngs(0))


def test_stack_ignores_padded_contents_and_reads_real_events(stack):
    """Permuting / replacing the padded positions' contents leaves the output as it is; changing one
    real event changes that row's output only."""
    x = _stack_input()
    out = np.asarray(_stack(stack, x))
    assert out.shape == (3, 8) and np.isfinite(out).all()
    mask = np.asarray(x["mask"])
    seq = np.asarray(x["sequence"])
    noise = np.random.default_rng(1).normal(size=seq.shape).astype(np.float32) * 10
    scrambled = np.where(mask[..., None], seq, noise)
    permuted = seq.copy()
    for b in range(len(seq)):
        pad = np.flatnonzero(~mask[b])
        permuted[b, pad] = seq[b, np.random.default_rng(b).permutation(pad)]
    for s in (scrambled, permuted):
        np.testing.assert_allclose(_stack(stack, {**x, "sequence": jnp.asarray(s)}), out, rtol=1e-5, atol=1e-6)
    b, pos = 2, int(np.flatnonzero(mask[2])[0])
    changed = seq.copy()
    changed[b, pos] += 1.0
    new = np.asarray(_stack(stack, {**x, "sequence": jnp.asarray(changed)}))
    assert np.abs(new[b] - out[b]).max() > 1e-4
    np.testing.assert_allclose(np.delete(new, b, 0), np.delete(out, b, 0), rtol=1e-5, atol=1e-6)


def test_context_token_sees_no_padded_position(stack):
    """Each row equals the stack on its real events alone (padded positions removed): a row without
    events is the context token through the layers by itself."""
    x = _stack_input(seed=3)
    out = np.asarray(_stack(stack, x))
    for b in range(3):
        keep = np.flatnonzero(np.asarray(x["mask"][b]))
        alone = {
            "sequence": x["sequence"][b : b + 1, keep],
            "mask": jnp.ones((1, len(keep)), bool),
            "context": x["context"][b : b + 1],
        }
        np.testing.assert_allclose(stack(alone)[0], out[b], rtol=1e-5, atol=1e-5)


def _reference_stack(stack: TransformerStack, x: dict) -> jax.Array:
    """The module docstring's formula written out: every layer updates every token, softmax over the
    valid keys by ``jax.nn.softmax`` with masked scores set to -inf, heads split on the last axis."""

    def linear(lin, a):
        return a @ lin.kernel[...] + lin.bias[...]

    def norm(ln, a):
        mean, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
        return (a - mean) / jnp.sqrt(var + 1e-6) * ln.scale[...] + ln.bias[...]

    mask = jnp.concatenate([jnp.ones((len(x["mask"]), 1), bool), x["mask"]], axis=1)
    t = jnp.concatenate([linear(stack.context, x["context"])[:, None], linear(stack.tokens, x["sequence"])], 1)
    for layer in stack.layers:
        b, n, d = t.shape
        q, k, v = jnp.split(linear(layer.qkv, norm(layer.attention_norm, t)), 3, axis=-1)
        heads = [slice(i * d // layer.num_heads, (i + 1) * d // layer.num_heads) for i in range(layer.num_heads)]
        attended = []
        for h in heads:
            scores = jnp.einsum("bqd,bkd->bqk", q[..., h], k[..., h]) / np.sqrt(h.stop - h.start)
            weights = jax.nn.softmax(jnp.where(mask[:, None, :], scores, -jnp.inf), axis=-1)
            attended.append(jnp.einsum("bqk,bkd->bqd", weights, v[..., h]))
        t = t + linear(layer.out, jnp.concatenate(attended, axis=-1))
        hidden = jax.nn.gelu(linear(layer.mlp_in, norm(layer.mlp_norm, t)), approximate=True)
        t = t + linear(layer.mlp_out, hidden)
    return norm(stack.norm, t[:, 0])


@pytest.mark.parametrize("depth", [1, 3])
def test_stack_equals_the_textbook_formula_and_its_gradient(depth):
    """Output and gradients (w.r.t. every parameter and the sequence) equal those of the formula
    written out with every token updated in every layer: the last layer's context-token-only update,
    the additive key bias and the normalisation after the value product change nothing."""
    stack = TransformerStack(D_CONTEXT, E, 8, depth, num_heads=2, rngs=nnx.Rngs(depth))
    x = _stack_input(seed=5, batch=4)
    np.testing.assert_allclose(_stack(stack, x), nnx.jit(_reference_stack)(stack, x), rtol=1e-5, atol=1e-5)

    graph, params = nnx.split(stack)

    def loss(fn, params, seq):
        out = fn(nnx.merge(graph, params), {**x, "sequence": seq})
        return jnp.sum(jnp.sin(3.0 * out))  # weights every output differently

    grads = [
        jax.jit(jax.grad(functools.partial(loss, fn), argnums=(0, 1)))(params, x["sequence"])
        for fn in (TransformerStack.__call__, _reference_stack)
    ]
    got, want = jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])
    assert len(got) == len(want) == len(jax.tree.leaves(params)) + 1  # every parameter and the sequence
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=5e-5)
    assert np.abs(np.asarray(grads[0][1])).max() > 1e-3  # the sequence matters


def test_stack_checks_width_and_depth():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TransformerStack(D_CONTEXT, E, 7, 1, num_heads=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth=0"):
        TransformerStack(D_CONTEXT, E, 8, 0, rngs=nnx.Rngs(0))


# -- the width chooser ---------------------------------------------------------------------------


COSTS = {
    "quadratic": lambda w: 3.0 * w * w + 7.0 * w - 100.0,
    "cubic": lambda w: 0.01 * w**3 + w,  # not quadratic: the interpolation misses, bisection finishes
    "steps": lambda w: 10.0 * (w // 7) + 1e-3 * w,  # jumps between nearly flat runs
}


@pytest.mark.parametrize("name", sorted(COSTS))
@pytest.mark.parametrize("target", [-5.0, 0.0, 17.0, 400.0, 401.0, 5e3, 1e9])
def test_closest_width_is_the_brute_force_argmin(name, target):
    grid = tuple(range(4, 41, 2))
    calls = []

    def cost(w):
        calls.append(w)
        return COSTS[name](w)

    best = min(grid, key=lambda w: (abs(cost(w) - target), w))
    calls.clear()
    assert baselines.closest_width(cost, target, grid) == best
    assert len(set(calls)) <= 2 * int(np.ceil(np.log2(len(grid)))) + 3  # a bisection, not a scan


@pytest.mark.parametrize("target", [1234.5, 5e4, 3e5, 7.7e5])
def test_closest_width_of_a_quadratic_cost_takes_five_probes(target):
    """Parameter counts are quadratic in the width: the interpolation finds the width in 5 models."""
    grid = tuple(range(4, 513))
    calls = set()

    def cost(w):
        calls.add(w)
        return 2.0 * w * w + 50.0 * w + 300.0

    best = min(grid, key=lambda w: (abs(cost(w) - target), w))
    calls.clear()
    assert baselines.closest_width(cost, target, grid) == best
    assert len(calls) <= 5, sorted(calls)


def test_width_grid():
    assert baselines.width_grid("din")[:3] == (4, 5, 6) and baselines.width_grid("din")[-1] == 512
    assert all(w % 2 == 0 for w in baselines.width_grid("transformer"))


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


@pytest.fixture(scope="module")
def store(tiny):
    """A historical store of a fixed stand-in FM (its outputs a function of the row), for every event."""

    def fm(rows):
        r = np.asarray(rows, np.float32)[:, None] * 0.01 + np.arange(8, dtype=np.float32)
        return {"logit": np.sin(r[:, 0]), "interaction": np.cos(r), "item": np.sin(r), "user": np.cos(2 * r)}

    return HistoricalStore.build(fm, tiny, np.arange(len(tiny["label"])), kind="interaction")


def _vm_config(**changes):
    return config.load_config(None, ("vm.max_len=8", "vm.history_len=4", "vm.d_state=8", *changes)).vm


@pytest.mark.slow  # builds and runs a VM per transfer (about 20 s cold)
@pytest.mark.parametrize("transfer", TRANSFERS)
def test_transformer_vm_reads_what_implicit_seq_reads(tiny, store, transfer):
    """Every transfer: the transformer VM's core reads core_input's dict (the LoopFM stream only with
    LoopFM), its parameter count is the abstract one, its depth is its number of layers."""
    from implicit_rec.loopfm.study import make_vm

    vm = _vm_config()
    model = make_vm(tiny, store, vm, "transformer", transfer, 0, depth=3, width=6)
    seq = make_vm(tiny, store, vm, "implicit-seq", transfer, 0)
    batch = vm_batches(tiny, store, vm.history_len, transfer)(tiny.rows("test")[:5])
    x, y = model.core_input(batch), seq.core_input(batch)
    assert jax.tree.map(jnp.shape, x) == jax.tree.map(jnp.shape, y)
    assert x["sequence"].shape[1] == 8 + (4 if transfer.startswith("loopfm") else 0)
    out = model(batch)
    assert out["logit"].shape == (5,) and np.isfinite(np.asarray(out["logit"])).all() and out["info"] is None
    assert len(model.core.layers) == 3 and model.hidden(x).shape == (5, 6)
    costs = baselines.CostModel(tiny, store, vm, transfer)
    assert costs.params("transformer", 3, 6) == count_params(model)


@pytest.mark.slow  # counts the parameters of many abstract VMs (about 14 s cold)
def test_params_match_is_within_the_grid_resolution(tiny, store):
    """Each params-matched baseline's count is the nearest on the grid: the target lies within half
    the gap to its grid neighbours; the recorded count is the built model's."""
    from implicit_rec.loopfm.study import make_vm

    vm = _vm_config()
    sw = config.load_config(
        None, ("sweep.baseline_depths=[1, 3]", 'sweep.baseline_match=["params"]', 'sweep.baseline_transfer="loopfm"')
    ).sweep
    specs = baselines.plan_baselines(tiny, store, vm, sw, log=lambda s: None)
    assert [s.tag for s in specs] == [
        "din-d1@params",
        "din-d3@params",
        "transformer-d1@params",
        "transformer-d3@params",
    ]
    costs = baselines.CostModel(tiny, store, vm, "loopfm")
    target = costs.params("implicit-seq")
    for s in specs:
        assert s.target == target
        grid = baselines.width_grid(s.arch)
        i = grid.index(s.width)
        lower = costs.params(s.arch, s.depth, grid[i - 1]) if i > 0 else -np.inf
        upper = costs.params(s.arch, s.depth, grid[i + 1]) if i + 1 < len(grid) else np.inf
        assert abs(s.params - target) <= target - lower and abs(s.params - target) <= upper - target
        built = make_vm(tiny, store, vm, s.arch, "loopfm", 0, s.hidden, depth=s.depth, width=s.width)
        assert count_params(built) == s.params
        assert (s.hidden is None) == (s.arch == "transformer")


@pytest.mark.slow
def test_flops_chooser_matches_brute_force_on_a_small_grid(tiny, store):
    """With FLOPs from compiled programs: bisection = argmin over the grid, and the implicit target
    is front + k cell + head of the sweep's accounting."""
    vm = _vm_config()
    costs = baselines.CostModel(tiny, store, vm, "none")
    k2, k4 = costs.implicit_flops("implicit-seq", 2), costs.implicit_flops("implicit-seq", 4)
    assert k4 > k2 > costs.implicit_flops("implicit-seq", 0) > 0
    np.testing.assert_allclose(k4 - k2, k2 - costs.implicit_flops("implicit-seq", 0), rtol=1e-9)
    grid = (4, 8, 16, 32, 64)
    for arch in ("din", "transformer"):
        values = [costs.flops(arch, 2, w) for w in grid]
        assert values == sorted(values)
        for target in (k2, k4, values[2] + 1.0):
            best = min(grid, key=lambda w: (abs(costs.flops(arch, 2, w) - target), w))
            assert baselines.closest_width(lambda w, a=arch: costs.flops(a, 2, w), target, grid) == best


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("sweep.baseline_depths=[0, 2]", r"sweep.baseline_depths\[0\] must be >= 1"),
        ("sweep.baseline_depths=[2, 2]", "sweep.baseline_depths lists 2 more than once"),
        ("sweep.baseline_depths=[]", "sweep.baseline_depths must not be empty"),
        ('sweep.baseline_archs=["implicit"]', r"sweep.baseline_archs\[0\]='implicit' is not valid; choose one of mlp"),
        ('sweep.baseline_archs=["cnn"]', r"sweep.baseline_archs\[0\]='cnn' is not valid"),
        (
            'sweep.baseline_match=["macs"]',
            r"sweep.baseline_match\[0\]='macs' is not valid; choose one of params, flops",
        ),
        ('sweep.match_arch="din"', "sweep.match_arch='din' is not valid; choose one of implicit, implicit-seq"),
        ("sweep.match_iterations=0", "sweep.match_iterations must be >= 1"),
        ("sweep.baselines=[[32, 32]]", "'sweep.baselines' was replaced by sweep.baseline_archs, sweep.baseline_depths"),
        ('sweep.baseline_arch="din"', "'sweep.baseline_arch' was replaced by sweep.baseline_archs"),
    ],
)
def test_bad_baseline_keys_are_errors_naming_them(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load_config(None, (override,))


def test_old_key_in_a_file_names_its_line_and_the_new_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[sweep]\nbaselines = [[32, 32]]\n")
    with pytest.raises(ConfigError, match=r"line 2: 'sweep.baselines' was replaced by sweep.baseline_archs"):
        config.load_config(path)
    cfg = config.load_config(None, ("sweep.baseline_archs=[]", "sweep.baseline_depths=[]"))
    assert cfg.sweep.baseline_archs == ()  # no baselines: the other lists are not read


# -- a whole tiny run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_trains_the_matched_baselines_per_seed(tmp_path):
    cfg = config.load_config(
        None,
        (
            'data.preset="tiny"',
            "fm.epochs=1",
            "fm.out_of_fold=0",
            "vm.epochs=1",
            "vm.seeds=2",
            'vm.archs=["implicit-seq"]',
            'vm.transfers=["loopfm"]',
            "sweep.iterations=[0, 2]",
            'sweep.methods=["picard"]',
            'sweep.baseline_transfer="loopfm"',
            'sweep.baseline_archs=["transformer"]',  # the DIN's baselines run in test_cli and test_stages
            "sweep.baseline_depths=[1]",
            'sweep.baseline_match=["params", "flops"]',
            "sweep.match_iterations=2",
            "sweep.lipschitz_examples=8",
            "sweep.lipschitz_perturbations=1",
            "sweep.timing_repeats=1",
        ),
    )
    out = tmp_path / "run"
    pipeline.run(out, cfg, quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    report.validate_metrics(m)
    points = m["baselines"]
    names = {f"transformer-d1@{x}/loopfm" for x in ("params", "flops")}
    assert {p["vm"] for p in points} == names
    assert sorted(p["seed"] for p in points) == sorted([0, 1] * len(names))
    plan = json.loads((out / "baselines.json").read_text())["baselines"]
    for p in points:
        spec = next(s for s in plan if f"{s['arch']}-d{s['depth']}@{s['match']}/loopfm" == p["vm"])
        assert (p["arch"], p["depth"], p["width"], p["match"], p["params"]) == (
            spec["arch"],
            spec["depth"],
            spec["width"],
            spec["match"],
            spec["params"],
        )
        if p["match"] == "flops":  # the sweep counts the same program the plan counted
            assert p["flops"] == pytest.approx(spec["flops"], rel=1e-6)
        assert np.isfinite(p["lipschitz_max"])
    flops_target = next(s["target"] for s in plan if s["match"] == "flops")
    k2 = [r["flops"] for r in m["sweep"] if r["iterations"] == 2]
    assert k2 and all(f == pytest.approx(flops_target, rel=1e-6) for f in k2)
    params_target = next(s["target"] for s in plan if s["match"] == "params")
    assert all(v["params"] == params_target for v in m["vms"])
    result = next(
        pipeline.VMResult.from_dict(json.loads(f.read_text()))
        for f in (out / "models").glob("baseline-transformer-d1-flops-loopfm-s1.json")
    )
    assert result.name == "transformer-d1@flops/loopfm" and result.hidden is None and result.depth == 1


def test_baseline_result_round_trips_and_old_results_still_load():
    old = {
        "name": "din/none",
        "arch": "din",
        "transfer": "none",
        "seed": 0,
        "auc": 0.6,
        "gauc": 0.55,
        "logloss": 0.5,
        "params": 99,
        "hidden": [8],
        "epochs": 1,
        "seconds": 1.0,
        "examples_per_second": 5.0,
        "weights": "models/vm-din-none-s0.msgpack",
    }
    assert pipeline.VMResult.from_dict(old).depth is None
    new = {**old, "name": "transformer-d2@flops/none", "arch": "transformer", "hidden": None, "depth": 2}
    new.update(width=6, match="flops", flops=1e5, target=1.1e5, history=[{"epoch": 1, "valid_auc": 0.6}])
    r = pipeline.VMResult.from_dict(json.loads(json.dumps(new)))
    assert r.to_dict() == new and not r.is_implicit
