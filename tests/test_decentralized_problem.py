"""Agent data: shards partition the VM window, samplers are deterministic, numpy batches match the study's."""

import numpy as np
import pytest

from implicit_rec.data import load_dataset
from implicit_rec.decentralized.problem import AgentSampler, shard_rows
from implicit_rec.loopfm.batches import vm_batches
from implicit_rec.loopfm.study import window_rows


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return load_dataset("synthetic", preset="tiny", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("how", ["iid", "by-user"])
def test_shards_partition_the_rows(table, how):
    rows = window_rows(table, "train", (4, 7))
    shards = shard_rows(table, rows, 5, how, seed=0)
    assert len(shards) == 5 and all(len(s) for s in shards)
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.sort(rows))
    users = [set(np.asarray(table["user"])[s]) for s in shards]
    if how == "by-user":  # heterogeneous: every user lives on exactly one agent
        assert sum(len(u) for u in users) == len(set().union(*users))
    else:
        assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_bad_sharding_is_named(table):
    with pytest.raises(ValueError, match="shards="):
        shard_rows(table, np.arange(10), 2, "random", 0)


def test_sampler_is_deterministic_and_cycles_through_the_shard():
    a, b = AgentSampler(np.arange(10), 4, 0, 3), AgentSampler(np.arange(10), 4, 0, 3)
    draws = [a.next() for _ in range(5)]
    for d in draws:
        np.testing.assert_array_equal(d, b.next())
    first_pass = np.concatenate(draws)[:10]
    np.testing.assert_array_equal(np.sort(first_pass), np.arange(10))
    assert not np.array_equal(AgentSampler(np.arange(10), 4, 0, 4).next(), draws[0])


def test_vm_batches_are_host_arrays_of_the_rows(table):
    rows = np.arange(10, 50)
    batch = vm_batches(table, None, 20, "none")(rows)
    assert all(isinstance(v, np.ndarray) for v in batch.values())
    np.testing.assert_array_equal(batch["label"], np.asarray(table["label"])[rows].astype(np.float32))
    assert batch["label"].dtype == np.float32
    with pytest.raises(ValueError, match="store="):
        vm_batches(table, None, 20, "loopfm")


@pytest.mark.slow  # compiles two implicit VMs inside the DSGD step (about 20 s cold)
@pytest.mark.parametrize("arch", ["implicit", "implicit-seq", "implicit-graph"])
def test_implicit_vms_train_in_the_dsgd_step_with_fresh_draws_per_step(table, arch):
    """The implicit VMs' state (power iteration, step counter, random streams) stays inside each loss
    call; random-k and random starts draw from (seed, agent, step) carried by the batch."""
    import jax
    import optax

    from dsgd import DSGD, agent_mesh, make_topology, put_agents
    from implicit_rec.config import from_dict
    from implicit_rec.decentralized.problem import training_batch, vm_problem

    vm = {"train_iterations": [1, 6], "train_grad": "unroll", "z0_noise": 0.3, "warmup_steps": 2}
    cfg = from_dict({"vm": vm, "dsgd": {"arch": arch, "agents": 1, "batch_size": 16}})
    prob = vm_problem(table, cfg)
    rows = prob.train_rows[:16]
    batches = [training_batch(prob.make_batch(rows), 0, 0, step) for step in range(3)]
    losses = [float(jax.jit(prob.loss)(prob.x0, b)) for b in batches]
    assert len(set(losses)) == 3  # same rows and parameters: the draws (and warm-up) differ by step
    assert float(jax.jit(prob.loss)(prob.x0, batches[1])) == losses[1]  # and are reproducible
    mesh = agent_mesh(1)
    engine = DSGD(make_topology("ceca-2p", 1), prob.loss, optimizer=optax.adam(1e-2), mesh=mesh)
    state = engine.init(prob.x0)
    for b in batches:
        state, loss = engine.step(state, put_agents(mesh, {0: b}, 1))
        assert np.isfinite(np.asarray(loss)).all()
    assert not np.allclose(np.asarray(state.x)[0], prob.x0)
