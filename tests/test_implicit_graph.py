"""The graph-propagation implicit VM (``arch="implicit-graph"``): its cell, node features, solve,
gradients, readout and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import implicit_vm, loopfm_batches, vm_gradients_ift_and_unrolled

from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.layers import GraphCell, SolverConfig
from implicit_rec.models.features import NodeCounts
from implicit_rec.models.vertical import GRAPH_CHANNELS, VerticalModel, vm_loss

FM_DIM, HISTORY, MAX_LEN, NODE_DIM = 6, 4, 8, 3


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


def _make_batch(tiny):
    return loopfm_batches(tiny, HISTORY, FM_DIM)


def _vm(tiny, transfer="loopfm+kd", seed=0, **options) -> VerticalModel:
    vm = implicit_vm(tiny, "implicit-graph", transfer, seed, node_dim=NODE_DIM, gamma=0.5, **options)
    cell = vm.core.cell
    # a weaker graph than the initialisation's and gamma 0.5: the cell contracts, the fixed point is unique
    cell.adjacency[...] = 0.2 * cell.adjacency[...]
    return vm


_core_input = nnx.jit(lambda m, b: m.core_input(b))
_forward = nnx.jit(lambda m, b: m(b)["logit"])
_solve = nnx.jit(lambda m, inp: m.core(inp)[0])
_state_logit = nnx.jit(lambda m, z, inp: m.state_logit(z, inp))


@nnx.jit(static_argnums=2)
def _picard(vm, inp, steps):
    """Plain iteration z <- cell(z, ctx) from z0 = 0, ``steps`` times."""
    ctx = vm.core.cell.prepare(inp)
    z0 = jnp.zeros((inp["context"].shape[0], vm.core.d_state), inp["context"].dtype)
    return jax.lax.fori_loop(0, steps, lambda _, z: vm.core.cell(z, ctx), z0)


@pytest.fixture(scope="module")
def batch(tiny):
    return _make_batch(tiny)(tiny.rows("train")[:8])


def test_messages_travel_one_hop_per_iteration_along_the_learned_graph():
    """A path graph 0 -> 1 -> ... -> 5, input on node 0 only, no biases: after k iterations exactly
    nodes 0..k-1 are non-zero (tanh(0) = 0), and a node off the path never is."""
    V, d = 7, 2
    cell = GraphCell(V, d, 1, rngs=nnx.Rngs(0), parameterization="none")
    adjacency = np.zeros((V, V), np.float32)
    for j in range(5):
        adjacency[j, j + 1] = 1.0  # edge j -> j + 1 (A[j, c]: j sends to c)
    cell.adjacency[...] = jnp.asarray(adjacency)
    cell.w.kernel[...] = jnp.zeros_like(cell.w.kernel[...])
    cell.node_bias[...] = jnp.zeros_like(cell.node_bias[...])
    cell.inject.bias[...] = jnp.zeros_like(cell.inject.bias[...])
    cell.message.kernel[...] = jnp.eye(d) * 2.0
    nodes = jnp.zeros((1, V, 1)).at[0, 0, 0].set(1.0)
    ctx = cell.prepare({"nodes": nodes})
    z = jnp.zeros((1, V * d))
    for k in range(1, 8):
        z = cell(z, ctx)
        reached = np.abs(np.asarray(z).reshape(V, d)).max(axis=1) > 0
        expected = np.arange(V) < min(k, 6)
        np.testing.assert_array_equal(reached, expected, err_msg=f"after {k} iterations")
    query = jnp.array([3])
    np.testing.assert_array_equal(cell.read(z, {"nodes": nodes, "query": query}), z.reshape(1, V, d)[:, 3])


def test_graph_cell_rejects_inputs_it_cannot_read():
    cell = GraphCell(4, 2, 3, rngs=nnx.Rngs(0), d_context=5)
    with pytest.raises(ValueError, match="'nodes'"):
        cell.prepare({"sequence": jnp.zeros((1, 4, 3))})
    with pytest.raises(ValueError, match="has 5 nodes; this GraphCell has 4"):
        cell.prepare({"nodes": jnp.zeros((1, 5, 3)), "context": jnp.zeros((1, 5))})
    with pytest.raises(ValueError, match="context"):
        cell.prepare({"nodes": jnp.zeros((1, 4, 3))})
    with pytest.raises(ValueError, match="num_nodes"):
        GraphCell(0, 2, 3, rngs=nnx.Rngs(0))


def test_node_counts_are_position_weighted_counts_of_real_entries():
    counts = NodeCounts(6, (5, 3), rngs=nnx.Rngs(0), channels=3)
    ids = np.array([[0, 2, 2, 5, 1], [3, 3, 3, 3, 3]])
    mask = ids > 0
    logged = np.array([[4, 4, 0], [2, 0, 0]])
    logged_mask = np.array([[True, True, False], [True, False, False]])
    out = np.asarray(counts([(jnp.asarray(ids), jnp.asarray(mask)), (jnp.asarray(logged), jnp.asarray(logged_mask))]))
    assert out.shape == (2, 6, 6)
    for s, (i, m) in enumerate(((ids, mask), (logged, logged_mask))):
        profile = np.asarray(counts.profiles[s][...])
        ref = np.zeros((2, 6, 3))
        for b in range(2):
            for pos in range(i.shape[1]):
                if m[b, pos]:
                    ref[b, i[b, pos]] += profile[pos]
        np.testing.assert_allclose(out[..., 3 * s : 3 * s + 3], ref, rtol=1e-6, atol=1e-6)
    # channel 0 starts as a plain count, channel 1 as a ramp that weights the newest entry most
    assert out[0, 2, 0] == 2.0 and out[1, 3, 0] == 5.0 and out[0, 0].sum() == 0.0  # PAD never counts
    assert out[1, 3, 1] == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_core_input_counts_the_histories_and_queries_the_candidate(tiny, batch):
    vm = _vm(tiny)
    assert vm.is_implicit and isinstance(vm.core.cell, GraphCell)
    V = tiny.vocab_sizes["cate_id"]
    assert vm.core.d_state == V * NODE_DIM
    inp = _core_input(vm, batch)
    assert inp["nodes"].shape == (8, V, 2 * GRAPH_CHANNELS)  # the behaviour stream and the logged ads
    np.testing.assert_array_equal(inp["query"], batch["cate_id"])
    ids = np.asarray(batch["cate_his"])[:, -MAX_LEN:]
    plain = np.stack([np.bincount(r[r > 0], minlength=V) for r in ids])
    np.testing.assert_allclose(inp["nodes"][..., 0], plain, atol=1e-6)  # channel 0: a count at initialisation
    logged = np.where(batch["loopfm_mask"], batch["loopfm_cate_id"], 0)
    plain = np.stack([np.bincount(r[r > 0], minlength=V) for r in logged])
    np.testing.assert_allclose(inp["nodes"][..., GRAPH_CHANNELS], plain, atol=1e-6)
    without = _vm(tiny, transfer="none")
    plain_batch = {k: v for k, v in batch.items() if not k.startswith("loopfm") and k != "fm_logit"}
    assert _core_input(without, plain_batch)["nodes"].shape == (8, V, GRAPH_CHANNELS)


def test_the_output_is_the_readout_of_the_limit_of_plain_picard_iteration(tiny, batch):
    vm = _vm(tiny, eval_solver=SolverConfig(method="anderson", max_iter=60, tol=1e-6))
    vm.eval()
    inp = _core_input(vm, batch)
    z = _solve(vm, inp)
    ref, ref_next = _picard(vm, inp, 200), _picard(vm, inp, 201)
    assert float(jnp.abs(ref_next - ref).max()) < 1e-6  # the reference has converged
    assert float(jnp.abs(ref).max()) > 0.05
    np.testing.assert_allclose(z, ref, atol=1e-5)
    np.testing.assert_allclose(_forward(vm, batch), _state_logit(vm, ref, inp), atol=1e-5)


def test_the_readout_reads_the_candidates_node(tiny, batch):
    """Moving the candidate to another category changes the logit through the node it reads; the
    node states themselves do not depend on the query."""
    vm = _vm(tiny)
    vm.eval()
    inp = _core_input(vm, batch)
    z = _solve(vm, inp)
    other = {**inp, "query": (inp["query"] + 1) % tiny.vocab_sizes["cate_id"]}
    np.testing.assert_array_equal(_solve(vm, other), z)
    nodes = np.asarray(z).reshape(8, -1, NODE_DIM)
    read = np.asarray(vm.core.cell.read(z, other))
    np.testing.assert_array_equal(read, nodes[np.arange(8), np.asarray(other["query"])])
    assert float(jnp.abs(_state_logit(vm, z, other) - _state_logit(vm, z, inp)).max()) > 1e-5


@pytest.mark.slow  # compiles a 100-step unrolled gradient
def test_implicit_gradients_match_a_long_unrolled_solve(tiny, batch):
    g_ift = vm_gradients_ift_and_unrolled(_vm(tiny), batch)
    cell = g_ift["core"]["cell"]
    assert float(jnp.abs(cell["adjacency"]).max()) > 0 and float(jnp.abs(cell["message"]["kernel"]).max()) > 0
    assert float(jnp.abs(g_ift["node_counts"]["profiles"][0]).max()) > 0
    assert float(jnp.abs(g_ift["readout_mlp"]["layers"][0]["kernel"]).max()) > 0


@pytest.mark.slow  # 14 s cold of compilation (the fast lane's 3 minutes are measured cold)
def test_the_correction_loss_scores_path_states_through_the_readout(tiny, batch):
    vm = _vm(tiny, layer_options={"correction_states": 2})
    vm.train()
    with_path = vm_loss(vm, batch, correction_weight=1.0)[0]
    without = vm_loss(vm, batch, correction_weight=0.0)[0]
    assert np.isfinite(float(with_path)) and float(with_path) > float(without)


def test_graph_field_must_be_a_shared_candidate_field_of_few_ids(tiny):
    with pytest.raises(ValueError, match=r"vm\.graph_field.*candidate field"):
        _vm(tiny, graph_field="pid")
    sizes = {**tiny.vocab_sizes, "cate_id": 5000}
    with pytest.raises(ValueError, match=r"vm\.graph_field.*5000 ids"):
        VerticalModel(tiny.schema, sizes, rngs=nnx.Rngs(0), arch="implicit-graph")


def test_the_sweep_reads_the_candidates_node_at_every_k(tiny, batch):
    """The sweep's logit after exactly k iterations is the model's own output at max_iter = k (Picard,
    no stopping), read through the graph readout (``VerticalModel.state_logit``)."""
    from implicit_rec import sweep as sweep_mod

    vm = _vm(tiny)
    vm.eval()
    inp = _core_input(vm, batch)
    for k in (1, 3):
        vm.core.eval_solver = SolverConfig(method="picard", max_iter=k, tol=1e-12)
        np.testing.assert_allclose(sweep_mod.score_at(vm, inp, k, "picard"), _forward(vm, batch), atol=1e-5)
