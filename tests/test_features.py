"""The DIN front end (``DINAttention``, ``match_counts``) and which streams the FM and the VMs read."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from implicit_rec.config import IMPLICIT_ARCHS
from implicit_rec.data.synthetic import synthetic_events
from implicit_rec.loopfm.batches import table_batches
from implicit_rec.models.features import DINAttention, match_counts, target_attention
from implicit_rec.models.foundation import FoundationModel
from implicit_rec.models.vertical import ARCHS, VerticalModel

DIM, L = 4, 6


@pytest.fixture(scope="module")
def attention():
    return DINAttention(DIM, L, rngs=nnx.Rngs(0))


def _weight(att: DINAttention, key: jax.Array, query: jax.Array) -> jax.Array:
    """sigmoid(MLP([k, q, k - q, k * q])) of one (key, query) pair: the gate of a history position."""
    return jax.nn.sigmoid(att.unit(jnp.concatenate([key, query, key - query, key * query])[None])[0, 0])


def _copies(v: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(1, L, d) history holding n copies of v in its last n positions (pre-padded), and its mask."""
    mask = jnp.arange(L) >= L - n
    return jnp.where(mask[:, None], v, 0.0)[None], mask[None]


def test_din_closed_form_without_position_embeddings():
    """With the position embedding zeroed, n equal entries of weight w give count log1p(n w), pooled n w v / L."""
    att = DINAttention(DIM, L, rngs=nnx.Rngs(1))
    att.position = nnx.Embed(L, DIM, embedding_init=nnx.initializers.zeros, rngs=nnx.Rngs(2))
    q, v = jax.random.normal(jax.random.key(0), (2, DIM))
    w = _weight(att, v, q)
    assert 0.0 < float(w) < 1.0
    for n in range(L + 1):
        out = att(q[None], *_copies(v, n))
        np.testing.assert_allclose(out["count"], [[np.log1p(n * w)]], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["pooled"], (n * w * v / L)[None], rtol=1e-5, atol=1e-6)


def test_din_count_and_pooled_sum_grow_with_matches_unlike_softmax(attention):
    q, v = jax.random.normal(jax.random.key(1), (2, DIM))
    counts, norms = [], []
    for n in range(1, L + 1):
        values, mask = _copies(v, n)
        out = attention(q[None], values, mask)
        counts.append(float(out["count"][0, 0]))
        norms.append(float(jnp.linalg.norm(out["pooled"])))
        # the pooled sum stays along v: sum_l w_l v / L
        np.testing.assert_allclose(out["pooled"][0] * float(jnp.dot(v, v)), jnp.dot(out["pooled"][0], v) * v, atol=1e-5)
        # softmax attention keeps only the mix: n copies of v give v, whatever n
        np.testing.assert_allclose(target_attention(q[None], values, values, mask)[0], v, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(counts) > 0) and np.all(np.diff(norms) > 0), (counts, norms)
    assert counts[-1] < np.log1p(L)  # every gate is below 1


def test_din_masked_positions_contribute_nothing(attention):
    q = jax.random.normal(jax.random.key(2), (3, DIM))
    values = jax.random.normal(jax.random.key(3), (3, L, DIM))
    mask = jnp.array([[False] * L, [False, False, True, True, False, True], [True] * L])
    garbage = jnp.where(mask[..., None], values, 1e3 * jax.random.normal(jax.random.key(4), values.shape))
    zeros = jnp.where(mask[..., None], values, 0.0)
    a, b = attention(q, garbage, mask), attention(q, zeros, mask)
    for key in ("pooled", "count"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a["pooled"][0], 0.0)  # nothing real: no interest, count log1p(0) = 0
    np.testing.assert_array_equal(a["count"][0], 0.0)
    assert a["pooled"].shape == (3, DIM) and a["count"].shape == (3, 1)
    assert float(a["count"][2, 0]) > float(a["count"][1, 0]) > 0  # more real entries, never fewer gates


def _match_reference(batch: dict, pairs, max_len: int) -> np.ndarray:
    out = np.zeros((len(batch[pairs[0][1]]), len(pairs)), np.float32)
    for j, (seq, cand) in enumerate(pairs):
        for b, (history, target) in enumerate(zip(np.asarray(batch[seq]), np.asarray(batch[cand]))):
            out[b, j] = np.log1p(sum(int(i) == int(target) for i in history[-max_len:]) if target > 1 else 0)
    return out


def test_match_counts_equal_a_numpy_reference():
    rng = np.random.default_rng(0)
    batch = {
        "cate_his": rng.integers(0, 5, (64, 10)).astype(np.int32),  # small vocabulary: many matches
        "brand_his": rng.integers(0, 8, (64, 10)).astype(np.int32),
        "cate_id": rng.integers(0, 5, 64).astype(np.int32),
        "brand": rng.integers(0, 8, 64).astype(np.int32),
    }
    pairs = (("cate_his", "cate_id"), ("brand_his", "brand"))
    for max_len in (10, 4, 1):  # only the last max_len entries count
        got = np.asarray(match_counts(batch, pairs, max_len))
        assert got.shape == (64, 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, _match_reference(batch, pairs, max_len), rtol=1e-6)
    assert np.asarray(match_counts(batch, pairs, 10)).max() > np.log1p(2)  # the reference is not all zeros
    batch["cate_his"][0] = [0, 0, 0, 3, 7, 3, 9, 3, 1, 3]
    batch["cate_id"][0] = 3
    assert float(match_counts(batch, pairs[:1], 10)[0, 0]) == pytest.approx(np.log1p(4))
    assert float(match_counts(batch, pairs[:1], 3)[0, 0]) == pytest.approx(np.log1p(2))  # [3, 1, 3]
    assert float(match_counts(batch, pairs[:1], 2)[0, 0]) == pytest.approx(np.log1p(1))  # [1, 3]


def test_match_counts_pad_and_oov_never_match():
    batch = {
        "his": np.array([[0] * 6, [1] * 6, [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]], np.int32),
        "cand": np.array([0, 1, 1, 2], np.int32),
    }
    got = np.asarray(match_counts(batch, (("his", "cand"),), 6))[:, 0]
    np.testing.assert_allclose(got, [0, 0, 0, np.log1p(2)], rtol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        match_counts(batch, (), 6)


# -- the FM reads the other-surface orders; no VM does -----------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return synthetic_events("tiny", seed=0)


@pytest.fixture(scope="module")
def orders_changed(tiny):
    """(batch, the same batch with other ids in every non-padding position of the order streams)."""
    order_columns = [seq for seq, _ in tiny.schema.fm_sequences]
    assert order_columns and not set(order_columns) & {seq for seq, _ in tiny.schema.sequences}
    batch = table_batches(tiny)(tiny.rows("train")[:64])
    changed = dict(batch)
    rng = np.random.default_rng(0)
    for seq, vocab in tiny.schema.fm_sequences:
        ids = rng.integers(2, tiny.vocab_sizes[vocab], batch[seq].shape).astype(batch[seq].dtype)
        changed[seq] = np.where(batch[seq] > 0, ids, 0)
        assert not np.array_equal(changed[seq], batch[seq])
    return batch, changed


@nnx.jit
def _forward(model, batch):
    return model(batch)


@pytest.mark.slow  # several seconds of cold compilation (keeps the fast lane under 3 minutes)
def test_the_fm_reads_the_order_streams(tiny, orders_changed):
    batch, changed = orders_changed
    fm = FoundationModel(tiny.schema, tiny.vocab_sizes, rngs=nnx.Rngs(0), size="small", max_len=32)
    fm.eval()
    assert fm.reads_fm_streams
    a, b = _forward(fm, batch), _forward(fm, changed)
    assert float(jnp.max(jnp.abs(a["logit"] - b["logit"]))) > 1e-4
    assert float(jnp.max(jnp.abs(a["user"] - b["user"]))) > 1e-4  # the user representation reads them too
    np.testing.assert_array_equal(np.asarray(a["item"]), np.asarray(b["item"]))  # the item embedding does not


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in IMPLICIT_ARCHS else a for a in ARCHS])
def test_no_vm_reads_the_order_streams(tiny, orders_changed, arch):
    batch, changed = orders_changed
    fm_dim, history_len = 16, 5
    rng = np.random.default_rng(1)
    extra = {
        "loopfm": rng.normal(size=(len(batch["label"]), history_len, fm_dim)).astype(np.float32),
        "loopfm_mask": rng.random((len(batch["label"]), history_len)) < 0.7,
        "loopfm_logit": rng.normal(size=(len(batch["label"]), history_len)).astype(np.float32),
        "fm_logit": rng.normal(size=len(batch["label"])).astype(np.float32),
    }
    for c in tiny.schema.query_fields:  # the ids of the logged requests' ads: some equal the candidate's
        extra[f"loopfm_{c}"] = np.where(rng.random((len(batch["label"]), history_len)) < 0.5, batch[c][:, None], 0)
    for transfer in ("none", "loopfm+kd"):  # loopfm+kd reads every input the kd and loopfm variants read
        vm = VerticalModel(
            tiny.schema,
            tiny.vocab_sizes,
            rngs=nnx.Rngs(0),
            arch=arch,
            transfer=transfer,
            max_len=32,
            fm_dim=fm_dim,
            history_len=history_len,
        )
        vm.eval()
        a, b = _forward(vm, {**batch, **extra}), _forward(vm, {**changed, **extra})
        for key in ("logit", "aux_logit"):
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=f"{arch} {transfer} {key}")


def test_same_ad_pooling_matches_a_reference():
    """Per candidate field: the mean of the logged entries whose ad shares the candidate's id, the
    mean of their logged logits, log(1 + how many); PAD / OOV candidates and masked entries never match."""
    from implicit_rec.models.vertical import _same_ad_pooling

    rng = np.random.default_rng(0)
    b, length, d = 6, 5, 3
    cand = np.array([2, 3, 1, 0, 4, 2])  # rows 2 and 3: OOV / PAD candidates
    past = rng.choice([0, 1, 2, 3, 4], size=(b, length))
    past[2, 0], past[3, 1] = 1, 0  # equal to the OOV / PAD candidate: must not match
    mask = rng.random((b, length)) < 0.8
    hist = rng.normal(size=(b, length, d)).astype(np.float32)
    logit = rng.normal(size=(b, length)).astype(np.float32)
    batch = {"brand": jnp.asarray(cand), "loopfm_brand": jnp.asarray(past), "loopfm_logit": jnp.asarray(logit)}
    pooled, mean_logit, count = _same_ad_pooling(batch, jnp.asarray(hist), jnp.asarray(mask), ("brand",))
    for i in range(b):
        same = [j for j in range(length) if mask[i, j] and cand[i] > 1 and past[i, j] == cand[i]]
        n = len(same)
        want = hist[i, same].mean(0) if n else np.zeros(d)
        np.testing.assert_allclose(np.asarray(pooled[i]), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(mean_logit[i, 0]), logit[i, same].mean() if n else 0.0, rtol=1e-5, atol=1e-6)
        assert float(count[i, 0]) == pytest.approx(np.log1p(n))
    assert float(count[2, 0]) == float(count[3, 0]) == 0.0
