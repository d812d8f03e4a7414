"""Gossip schedules: exactness of CECA, window invariant, stochasticity, one send / one receive."""

import numpy as np
import pytest

from dsgd import (
    TOPOLOGIES,
    ceca_bits,
    gossip,
    gossip_state,
    make_topology,
    mixing_matrix,
    period_matrix,
)
from dsgd.topology import message_sources


def _values(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float64)


def test_ceca_2p_exact_mean_after_one_period_for_every_n():
    for n in range(2, 301):
        top = make_topology("ceca-2p", n)
        assert top.period == (n - 1).bit_length()
        v = _values(n, n)
        np.testing.assert_allclose(gossip(top, v), np.broadcast_to(v.mean(0), v.shape), atol=1e-12, err_msg=f"n={n}")


def test_ceca_1p_exact_mean_after_one_period_for_every_even_n():
    for n in range(2, 301, 2):
        v = _values(n, n)
        np.testing.assert_allclose(
            gossip(make_topology("ceca-1p", n), v), np.broadcast_to(v.mean(0), v.shape), atol=1e-12, err_msg=f"n={n}"
        )


def test_ceca_stays_exact_over_later_periods():
    top = make_topology("ceca-2p", 11)
    v = _values(11)
    np.testing.assert_allclose(gossip(top, v, 3 * top.period), np.broadcast_to(v.mean(0), v.shape), atol=1e-12)
    np.testing.assert_allclose(period_matrix(top, start=top.period), np.full((11, 11), 1 / 11), atol=1e-12)


def test_period_uses_integer_bits_for_large_powers_of_two():
    for k in (40, 53, 60):
        n = 2**k
        assert ceca_bits(n) == [1] * k
        assert ceca_bits(n + 1) == [1] + [0] * k


@pytest.mark.parametrize("name", ["ceca-2p", "ceca-1p"])
@pytest.mark.parametrize("n", [2, 4, 6, 10, 12, 16])
def test_window_invariant(name, n):
    """After a prefix with counter m: x_i = avg e_{i-m..i}, x̂_i = avg e_{i-m..i-1} (2-port)."""
    top = make_topology(name, n)
    eye = np.eye(n)
    m = 0
    for r, b in enumerate(ceca_bits(n)):
        x, xh = gossip_state(top, (eye, eye), r + 1)
        m = 2 * m + b
        if name == "ceca-2p":
            want_x = np.zeros((n, n))
            want_xh = np.zeros((n, n))
            for i in range(n):
                want_x[i, [(i - j) % n for j in range(m + 1)]] = 1 / (m + 1)
                want_xh[i, [(i - j) % n for j in range(1, m + 1)]] = 1 / m
            np.testing.assert_allclose(x, want_x, atol=1e-12, err_msg=f"round {r}")
            np.testing.assert_allclose(xh, want_xh, atol=1e-12, err_msg=f"round {r}")
        else:  # 1-port: windows of the same sizes (m + 1 for x, m for x̂), equal weights
            for i in range(n):
                assert np.isclose(np.sort(x[i])[-(m + 1) :], 1 / (m + 1)).all()
                assert np.count_nonzero(x[i] > 1e-12) == m + 1
                assert np.count_nonzero(xh[i] > 1e-12) == m
                assert np.isclose(np.sort(xh[i])[-m:], 1 / m).all()


@pytest.mark.parametrize("name", [t for t in TOPOLOGIES])
@pytest.mark.parametrize("n", [4, 6, 8, 12])
def test_rounds_are_row_stochastic_with_one_send_and_receive_per_message(name, n):
    top = make_topology(name, n)
    for k in range(top.period):
        w = mixing_matrix(top, k)
        assert (w >= -1e-15).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
        for pairs in top.round(k).pairs:
            assert sorted(s for s, _ in pairs) == list(range(n))  # each agent sends once
            assert sorted(d for _, d in pairs) == list(range(n))  # and receives once
            assert all(s != d for s, d in pairs)
            assert (message_sources(pairs, n) >= 0).all()
    if name.startswith("ceca") or name == "exp2-one-peer":
        assert top.messages_per_round == 1


def test_ceca_1p_is_a_perfect_matching():
    for n in (2, 6, 12, 40):
        for rnd in make_topology("ceca-1p", n).rounds:
            (pairs,) = rnd.pairs
            assert set(pairs) == {(d, s) for s, d in pairs}  # partners exchange


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
def test_power_of_two_ceca_is_the_one_peer_exponential_graph(k):
    n = 2**k
    ceca, exp2 = make_topology("ceca-2p", n), make_topology("exp2-one-peer", n)
    assert ceca.period == exp2.period == k
    for r in range(k):
        assert ceca.rounds[r].pairs == exp2.rounds[r].pairs
        assert ceca.rounds[r].sent == ("x",)
        assert ceca.rounds[r].keep[0] == ceca.rounds[r].recv[0][0] == 0.5
    v = _values(n)
    np.testing.assert_allclose(gossip(ceca, v), gossip(exp2, v), atol=1e-12)
    np.testing.assert_allclose(gossip(exp2, v), np.broadcast_to(v.mean(0), v.shape), atol=1e-12)


@pytest.mark.parametrize("n", [5, 6, 12])
def test_one_peer_exponential_graph_is_not_exact_otherwise(n):
    top = make_topology("exp2-one-peer", n)
    # ||W_period - 11ᵀ/n||₂ ≈ 0.2 for exp2-one-peer; CECA's period product is the averaging matrix
    assert np.linalg.norm(period_matrix(top) - 1 / n, 2) > 0.15
    v = _values(n)
    assert np.abs(gossip(top, v) - v.mean(0)).max() > 1e-2 * np.ptp(v)
    assert np.linalg.norm(period_matrix(make_topology("ceca-2p", n)) - 1 / n, 2) < 1e-12


def test_worked_example_n6():
    top = make_topology("ceca-2p", 6)
    assert [r.sent for r in top.rounds] == [("x",), ("xhat",), ("x",)]
    assert [r.pairs[0][0] for r in top.rounds] == [(0, 1), (0, 1), (0, 3)]
    np.testing.assert_allclose([r.recv[1][0] for r in top.rounds], [1, 0.5, 0.6])
    np.testing.assert_allclose([r.keep[0] for r in top.rounds], [0.5, 2 / 3, 0.5])


def test_small_and_special_sizes():
    one = make_topology("ceca-2p", 1)
    np.testing.assert_allclose(gossip(one, np.ones((1, 2))), np.ones((1, 2)))
    assert make_topology("ceca-1p", 1).period == 1
    v = _values(6)
    np.testing.assert_allclose(gossip(make_topology("complete", 6), v), np.broadcast_to(v.mean(0), v.shape))
    assert make_topology("torus", 12).messages_per_round == 4
    assert make_topology("ring", 7).messages_per_round == 2


def test_bad_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="ceca-2p"):
        make_topology("ceca-1p", 7)
    with pytest.raises(ValueError, match="unknown topology"):
        make_topology("star", 4)
    with pytest.raises(ValueError, match="n must be"):
        make_topology("ring", 0)
    with pytest.raises(ValueError, match="torus"):
        make_topology("torus", 7)
    with pytest.raises(ValueError, match="values"):
        gossip(make_topology("ring", 4), np.zeros((3, 2)))
