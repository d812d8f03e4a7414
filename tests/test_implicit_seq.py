"""The sequence-reading implicit VM (``arch="implicit-seq"``): its solve, its gradients, what it reads, its sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import implicit_vm, loopfm_batches, vm_gradients_ift_and_unrolled

from implicit_rec import metrics
from implicit_rec import sweep as sweep_mod
from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.layers import SequenceCell, SolverConfig
from implicit_rec.models.vertical import VerticalModel

FM_DIM, HISTORY, MAX_LEN, D_STATE = 6, 4, 8, 8


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


def _make_batch(tiny):
    return loopfm_batches(tiny, HISTORY, FM_DIM)


def _vm(tiny, transfer="loopfm+kd", seed=0, **solvers) -> VerticalModel:
    vm = implicit_vm(tiny, "implicit-seq", transfer, seed, d_state=D_STATE, **solvers)
    return vm


_core_input = nnx.jit(lambda m, b: m.core_input(b))
_forward = nnx.jit(lambda m, b: m(b)["logit"])
_solve = nnx.jit(lambda m, inp: m.core(inp)[0])
_embed = nnx.jit(lambda m, b: m.embed(b))
_features = nnx.jit(lambda m, b: m.features(b))


@nnx.jit
def _step(vm, inp, z):
    """One application of the cell to the state z (B, d_state) at the input inp."""
    f, _, args = vm.core.functional(inp)
    return f(z, *args)


@nnx.jit(static_argnums=2)
def _picard(vm, inp, steps):
    """Plain iteration z <- cell(z, ctx) from z0 = 0, ``steps`` times."""
    ctx = vm.core.cell.prepare(inp)
    z0 = jnp.zeros((inp["context"].shape[0], D_STATE), inp["context"].dtype)
    return jax.lax.fori_loop(0, steps, lambda _, z: vm.core.cell(z, ctx), z0)


@pytest.fixture(scope="module")
def batch(tiny):
    return _make_batch(tiny)(tiny.rows("train")[:8])


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_core_input_is_the_two_segmented_sequences_with_the_front_end_as_context(tiny, batch):
    vm = _vm(tiny)
    assert vm.is_implicit and isinstance(vm.core.cell, SequenceCell)
    inp, e = _core_input(vm, batch), _embed(vm, batch)
    length = e["sequence"].shape[1]
    assert inp["sequence"].shape == (8, length + HISTORY, 8) and inp["mask"].dtype == jnp.bool_
    seg = vm.segments[...]
    np.testing.assert_allclose(inp["sequence"][:, :length], e["sequence"] + seg[0], rtol=1e-6)
    np.testing.assert_allclose(inp["sequence"][:, length:], vm.loopfm_proj(batch["loopfm"]) + seg[1], rtol=1e-6)
    np.testing.assert_array_equal(inp["mask"], np.concatenate([e["mask"], batch["loopfm_mask"]], axis=1))
    np.testing.assert_allclose(inp["context"], _features(vm, batch), rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(seg[0] - seg[1]).max()) > 0  # the two segments are told apart


@pytest.mark.slow  # 11 s cold of compilation (the fast lane's 3 minutes are measured cold)
def test_the_output_is_the_limit_of_plain_picard_iteration(tiny, batch):
    vm = _vm(tiny, eval_solver=SolverConfig(method="anderson", max_iter=60, tol=1e-6))
    vm.eval()
    inp = _core_input(vm, batch)
    z = _solve(vm, inp)
    ref, ref_next = _picard(vm, inp, 200), _picard(vm, inp, 201)
    assert float(jnp.abs(ref_next - ref).max()) < 1e-6  # the reference has converged
    assert float(jnp.abs(ref).max()) > 0.05
    np.testing.assert_allclose(z, ref, atol=1e-5)
    np.testing.assert_allclose(_forward(vm, batch), vm.head(ref)[:, 0], atol=1e-5)


@pytest.mark.slow  # compiles a 100-step unrolled gradient (about 10 s cold)
def test_implicit_gradients_match_a_long_unrolled_solve(tiny, batch):
    g_ift = vm_gradients_ift_and_unrolled(_vm(tiny), batch)
    cell = g_ift["core"]["cell"]
    for name in ("key", "value", "query", "context", "mlp_in", "mlp_out"):  # every path carries gradient
        assert float(jnp.abs(cell[name]["kernel"]).max()) > 0, name
    assert float(jnp.abs(g_ift["segments"]).max()) > 0 and float(jnp.abs(g_ift["loopfm_proj"]["kernel"]).max()) > 0


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_it_reads_the_sequences_at_every_iteration_and_only_their_real_positions(tiny, batch):
    vm = _vm(tiny)
    vm.eval()
    inp = _core_input(vm, batch)
    mask = np.asarray(inp["mask"])
    length = _embed(vm, batch)["sequence"].shape[1]
    z = jax.random.normal(jax.random.key(1), (8, D_STATE)) * 0.5

    def with_change(where):
        seq = np.array(inp["sequence"])
        seq[where] += 1.0
        return {**inp, "sequence": jnp.asarray(seq)}

    b_in = int(np.flatnonzero(mask[:, :length].any(1))[0])
    pos_in = int(np.flatnonzero(mask[b_in, :length])[0])
    b_out, pos_out = map(int, np.argwhere(~mask)[0])
    b_fm = int(np.flatnonzero(mask[:, length:].any(1))[0])
    pos_fm = length + int(np.flatnonzero(mask[b_fm, length:])[0])
    for b, pos, changes in ((b_in, pos_in, True), (b_fm, pos_fm, True), (b_out, pos_out, False)):
        changed = with_change((b, pos))
        step, step2 = _step(vm, inp, z), _step(vm, changed, z)  # one iteration from the same state
        zs, zs2 = _solve(vm, inp), _solve(vm, changed)
        if changes:
            assert float(jnp.abs(step2[b] - step[b]).max()) > 1e-4, (b, pos)
            assert float(jnp.abs(zs2[b] - zs[b]).max()) > 1e-4, (b, pos)
            others = np.arange(8) != b
            np.testing.assert_array_equal(zs2[others], zs[others])  # samples do not interact
        else:
            np.testing.assert_array_equal(step2, step)
            np.testing.assert_array_equal(zs2, zs)

    # from the batch: one behaviour id in the window, one logged FM embedding
    seq_col = tiny.schema.sequences[0][0]
    ids = np.array(batch[seq_col])
    row, col = np.argwhere(ids[:, -MAX_LEN:] > 1)[0]
    ids[row, ids.shape[1] - MAX_LEN + col] = 2 + (ids[row, ids.shape[1] - MAX_LEN + col] - 1) % 5
    fm = np.array(batch["loopfm"])
    fm[b_fm, pos_fm - length] += 1.0
    base = _forward(vm, batch)
    for changed in ({**batch, seq_col: ids}, {**batch, "loopfm": fm}):
        assert float(jnp.abs(_forward(vm, changed) - base).max()) > 1e-4


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_without_loopfm_it_reads_the_behaviour_sequence_only(tiny, batch):
    vm = _vm(tiny, transfer="none")
    params = nnx.to_pure_dict(nnx.state(vm, nnx.Param))
    assert not any("loopfm" in k for k in params) and vm.segments[...].shape == (1, 8)
    plain = {k: v for k, v in batch.items() if not k.startswith("loopfm") and k != "fm_logit"}
    inp, e = _core_input(vm, plain), _embed(vm, plain)
    assert inp["sequence"].shape == e["sequence"].shape
    np.testing.assert_array_equal(inp["mask"], e["mask"])
    assert np.isfinite(np.asarray(_forward(vm, plain))).all()


@pytest.mark.slow  # compiles the sweep and the Lipschitz trajectory (about 13 s cold)
def test_sweep_and_lipschitz_run_on_the_dict_input(tiny):
    vm = _vm(tiny, eval_solver=SolverConfig(method="anderson", max_iter=30, tol=1e-4))
    make = _make_batch(tiny)
    rows = tiny.rows("test")[:40]
    x = sweep_mod.vm_features(vm, make, rows, chunk=16)  # 16 + 16 + 8 (padded) rows
    whole = _core_input(vm, make(rows))
    assert set(x) == {"sequence", "mask", "context"}
    for k in x:
        np.testing.assert_allclose(x[k], whole[k], rtol=1e-5, atol=1e-6)
    labels, users = np.asarray(tiny["label"][rows]), np.asarray(tiny["user"][rows])
    out = sweep_mod.implicit_sweep(vm, make, rows, labels, users, (0, 1, 2), "anderson", chunk=16).rows
    assert [r.iterations for r in out] == [0, 1, 2]
    assert all(np.isfinite(r.get("auc")) and r.get("flops") > 0 for r in out)
    assert out[2].get("flops") > out[1].get("flops") > out[0].get("flops")
    # the row at k = 2 is the model with two solver iterations
    solver, vm.core.eval_solver = vm.core.eval_solver, vm.core.eval_solver.replace(max_iter=2)
    probs = jax.nn.sigmoid(_forward(vm, make(rows)))
    vm.core.eval_solver = solver
    assert out[2].get("auc") == pytest.approx(metrics.evaluate(labels, np.asarray(probs), users)["auc"], abs=1e-6)
    lips = sweep_mod.lipschitz_sweep(vm, sweep_mod._take(x, slice(0, 8)), (0, 1, 2), "anderson", perturbations=2)
    assert [r.iterations for r in lips] == [0, 1, 2]
    assert lips[0].max == 0.0  # z_0 = 0 whatever the input
    assert all(np.isfinite(r.max) and r.max >= r.mean > 0 for r in lips[1:])


def test_an_odd_state_size_is_named(tiny):
    with pytest.raises(ValueError, match=r"d_state=7 \(vm.d_state\) must be a multiple of 2"):
        VerticalModel(tiny.schema, tiny.vocab_sizes, rngs=nnx.Rngs(0), arch="implicit-seq", d_state=7)
