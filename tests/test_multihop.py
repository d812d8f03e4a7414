"""The multihop preset: the threshold cascade (closed form), its graph, its oracle arrays and hop ceilings, config."""

import argparse
import dataclasses

import numpy as np
import pytest

from implicit_rec import ceiling, config, pipeline
from implicit_rec.data import synthetic
from implicit_rec.data.synthetic import PRESETS, cascade_hops, category_graph, synthetic_events

SMALL = dataclasses.replace(PRESETS["multihop"], users=150)  # the multihop world, few users

# 0 -> 2, 1 -> 2, 1 -> 3, 2 -> 3, 2 -> 4, 3 -> 4, 5 -> 4 (graph[i, j]: i is an in-neighbour of j)
EDGES = [(0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (5, 4)]
GRAPH = np.zeros((6, 6), bool)
GRAPH[tuple(np.array(EDGES).T)] = True


@pytest.fixture(scope="module")
def small():
    return synthetic_events(SMALL, seed=0)


def test_cascade_hops_closed_form():
    seeds = np.array([[0, 1], [0, -1], [1, 2], [-1, -1]])
    expected = [
        [0, 0, 1, 2, 3, -1],  # {0,1} -> 2 -> 3 (needs 1 and 2) -> 4 (needs two of 2, 3, 5)
        [0, -1, -1, -1, -1, -1],  # one seed never reaches a threshold of 2
        [-1, 0, 0, 1, 2, -1],
        [-1] * 6,
    ]
    np.testing.assert_array_equal(cascade_hops(seeds, GRAPH, 2), expected)
    truncated = cascade_hops(seeds, GRAPH, 2, max_hops=2)
    np.testing.assert_array_equal(truncated, np.where(np.array(expected) <= 2, expected, -1))
    # threshold 1: plain reachability, hop = shortest-path distance from the seed set
    np.testing.assert_array_equal(cascade_hops(np.array([[0]]), GRAPH, 1), [[0, -1, 1, 2, 2, -1]])
    assert cascade_hops(seeds, GRAPH, 2).dtype == np.int16


def test_category_graph_degree_span_and_stream():
    g = category_graph(SMALL, 0)
    assert g.shape == (SMALL.categories,) * 2 and g.dtype == bool
    np.testing.assert_array_equal(g.sum(axis=0), SMALL.cascade_in_degree)  # every category's in-degree
    assert not np.any(np.diag(g))
    np.testing.assert_array_equal(category_graph(SMALL, 0), g)  # deterministic by seed
    assert not np.array_equal(category_graph(SMALL, 1), g)  # another seed, another graph
    loose = category_graph(dataclasses.replace(SMALL, cascade_span=0), 0)
    np.testing.assert_array_equal(loose.sum(axis=0), SMALL.cascade_in_degree)
    # in-neighbours lie within cascade_span places before a category on one ring: the ring's
    # successor map follows from the span-1 graph (each node's one in-neighbour is its predecessor)
    ring = category_graph(dataclasses.replace(SMALL, cascade_span=1, cascade_in_degree=1, cascade_threshold=1), 0)
    successor, node, seen = ring.argmax(axis=1), 0, set()
    for _ in range(SMALL.categories):
        seen.add(node)
        node = successor[node]
    assert node == 0 and len(seen) == SMALL.categories  # a single cycle through every category


def test_generator_cascade_hop_is_the_recomputation_from_the_table(small):
    n = len(small)
    hop = np.asarray(small.info["cascade_hop"])
    assert hop.shape == (n,) and hop.dtype.kind == "i" and hop.min() >= -1
    graph = small.info["category_graph"]
    assert graph.shape == (small.vocab_sizes["cate_id"],) * 2 and graph.dtype == bool
    assert not graph[:2].any() and not graph[:, :2].any()  # PAD and OOV have no edges
    assert small.info["cascade"] == {
        "threshold": SMALL.cascade_threshold,
        "gamma": SMALL.cascade_gamma,
        "weight": SMALL.cascade_weight,
        "seed_len": synthetic.CASCADE_SEED_LEN,
    }
    assert small.vocab_sizes["cate_id"] == SMALL.categories + 2  # every category known: the recomputation is exact
    np.testing.assert_array_equal(ceiling.cascade_hop(small, np.arange(n)), hop)
    assert len(np.unique(hop)) >= 6  # never, the seeds and several hops
    assert np.mean(hop >= 1) > 0.2  # many candidates need at least one step
    rows = np.arange(0, n, 3)
    h2 = ceiling.cascade_hop(small, rows, max_hops=2)
    np.testing.assert_array_equal(h2, np.where(hop[rows] <= 2, hop[rows], -1))


def test_click_logit_adds_the_cascade_term(small):
    """logit(click_prob) - cascade term = logit_base + the scaled history terms (whole windows where they fit)."""
    p = np.asarray(small.info["click_prob"], np.float64)
    hop = np.asarray(small.info["cascade_hop"])
    term = SMALL.cascade_weight * np.where(hop >= 0, SMALL.cascade_gamma ** np.maximum(hop, 0), 0.0)
    rest = np.log(p / (1 - p)) - term - np.asarray(small.info["logit_base"], np.float64)
    weights = SMALL.history_scale * synthetic.HISTORY_WEIGHTS
    assert np.abs(rest).max() <= np.abs(weights).sum() + 1e-3  # the history terms are bounded by their weights
    same = synthetic_events(dataclasses.replace(SMALL, cascade_weight=1e-9), seed=0)
    p0 = np.asarray(same.info["click_prob"], np.float64)
    np.testing.assert_allclose(np.log(p / (1 - p)) - np.log(p0 / (1 - p0)), term, atol=1e-4)
    np.testing.assert_array_equal(same.info["cascade_hop"], hop)  # the weight moves no other draw


def test_generation_is_deterministic(small):
    again = synthetic_events(SMALL, seed=0, block_users=37)
    for name in ("cascade_hop", "category_graph", "click_prob"):
        np.testing.assert_array_equal(again.info[name], small.info[name], err_msg=name)
    np.testing.assert_array_equal(again["label"], small["label"])


def test_presets_without_a_cascade_carry_no_cascade_arrays():
    tiny = synthetic_events("tiny", seed=0)
    assert not set(synthetic.CASCADE_INFO) & set(tiny.info) and "cascade" not in tiny.info
    assert "hops" not in ceiling.ceilings(tiny, 64, 16)
    with pytest.raises(ValueError, match="has no info arrays"):
        ceiling.hop_ceilings(tiny)


def test_hop_ceilings_report(small):
    found = ceiling.hop_ceilings(small, hops=[1, 3])
    assert list(found) == ["1", "3"]
    assert all(set(c) == {"auc", "gauc", "logloss"} and 0.5 < c["auc"] < 1 for c in found.values())
    c = ceiling.ceilings(small, 100, 25)
    assert list(c["hops"]) == ["1", "2", "4", "8"] and "hops:" in c["procedure"]
    assert c["hops"]["1"] == found["1"]["auc"]
    record = pipeline.CeilingResult(available=True, **c)
    assert pipeline.CeilingResult.from_dict(record.to_dict()) == record
    assert pipeline.CeilingResult(available=False).hops is None


@pytest.mark.parametrize("hops", [(0,), (1.5,), (), (True,), "8", (2, -1)])
def test_bad_hops_are_named(small, hops):
    with pytest.raises(ValueError, match="hops must be a non-empty list of positive integers"):
        ceiling.hop_ceilings(small, hops=hops)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cascade_hops(np.array([[0]]), GRAPH, 0), "threshold must be a positive integer"),
        (lambda: cascade_hops(np.array([[0]]), GRAPH, 2, max_hops=0), "max_hops must be a positive integer"),
        (lambda: cascade_hops(np.array([[6]]), GRAPH, 2), "node ids below 6"),
        (lambda: cascade_hops(np.array([0, 1]), GRAPH, 2), r"seeds must be an \(n, L\) integer array"),
        (lambda: cascade_hops(np.array([[0]]), GRAPH[:, :5], 2), "graph must be a square bool adjacency"),
        (lambda: category_graph(dataclasses.replace(SMALL, cascade_in_degree=9), 0), r"cascade_in_degree must lie in"),
        (lambda: category_graph(dataclasses.replace(SMALL, cascade_threshold=5), 0), r"cascade_threshold must lie"),
    ],
)
def test_bad_cascade_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_preset_multihop_is_a_config_choice():
    args = argparse.Namespace(config=None, overrides=[], preset="multihop")
    assert config.config_from_args(args, {"preset": "data.preset"}).data.preset == "multihop"
    with pytest.raises(config.ConfigError, match="multihop"):  # the error lists the choices
        config.load_config(None, ("data.preset=multihopp",))


@pytest.mark.slow
def test_multihop_hop_ceilings_rise_with_depth():
    table = synthetic_events("multihop", seed=0)
    hops = ceiling.ceilings(table, 100, 25)["hops"]
    assert hops["8"] - hops["1"] >= 0.03
    assert hops["1"] <= hops["2"] + 0.002 <= hops["4"] + 0.004 <= hops["8"] + 0.006
    assert 0.1 <= float(np.mean(table["label"][table.rows("test")])) <= 0.2
