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
