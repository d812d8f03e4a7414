"""Vertical models (VMs): compact CTR models, explicit or implicit, with LoopFM / KD transfer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..config import ARCHS, IMPLICIT_ARCHS, SEQUENCE_ARCHS, TRANSFERS
from ..data.events import Schema
from ..layers import (
    GraphCell,
    ImplicitLayer,
    MLPCell,
    SequenceCell,
    SolverConfig,
    fixed_point_correction_loss,
    initializers,
)
from .features import MLP, DINAttention, FeatureEmbedder, NodeCounts, match_counts
from .stacks import TransformerStack

__all__ = ["ARCHS", "TRANSFERS", "VerticalModel", "bce_with_logits", "vm_loss"]

SEQUENCE_HEADS = 2  # attention heads of the implicit-seq cell and the transformer (d_state, width: multiples)
GRAPH_MAX_NODES = 4096  # implicit-graph keeps one state per id of its field: a cap on that vocabulary
GRAPH_CHANNELS = 4  # position profiles per stream of implicit-graph's node counts (features.NodeCounts)


class VerticalModel(nnx.Module):
    """One batch format for every VM.

    Front end (shared by every arch, so comparisons are at equal inputs): embeddings of every field;
    the candidate c; the behaviour sequence (last ``max_len`` events) pooled by mean (``arch="mlp"``)
    or by DIN attention (``"din"``, ``"implicit"``: ``features.DINAttention``, unnormalised, with a
    soft count) into p, and p * c; exact match counts of the candidate's ids in the history
    (``features.match_counts``). For LoopFM transfer, the user's history of logged FM embeddings
    ``batch["loopfm"]`` (B, L, d_fm) with ``batch["loopfm_mask"]`` (B, L) is projected to the VM's
    width and pooled by DIN attention, keyed also by the ids of each logged request's ad
    (``batch["loopfm_<field>"]``), giving l, l * c, its mean and its soft count.
    Core: an MLP (explicit VMs) or an ``ImplicitLayer`` (``is_implicit``), whose train and eval
    iteration settings are separate. ``arch="implicit"``: an ``MLPCell`` on the front-end vector x.
    ``arch="implicit-seq"``: a ``SequenceCell`` that injects x as its context and attends, at every
    iteration, to the behaviour sequence (B, L, e) — followed, for the LoopFM transfers, by the
    projected logged FM history (B, L2, e) — each position plus a learned segment embedding
    (behaviour / LoopFM), keys and values computed once per forward pass. ``core_input(batch)``
    is what the core reads (x, or that dict). ``arch="transformer"``: the explicit counterpart of
    ``"implicit-seq"``, reading the same dict: ``depth`` pre-LayerNorm encoder layers of ``width``
    over [a context token from x] + the sequences (``stacks.TransformerStack``), read out at the
    context token. ``arch="implicit-graph"``: a ``GraphCell`` with one state of ``node_dim`` per id of
    ``graph_field`` (default the category: V = its vocabulary), messages along a learned V x V graph
    at every iteration; each node's input is its counts in the behaviour sequence and (LoopFM) in the
    logged requests' ads, weighted by learned position profiles (``features.NodeCounts``); the
    nodes do not see x (injecting it into every node hid the cascade in the probes). The readout is
    [relu(MLP([the candidate's node state, x])), that node state] (``hidden`` widths): a DIN whose
    features include the state the graph propagation reached for the candidate's id.
    The implicit cores take the state map's ``parameterization`` and ``gamma`` (``layers.StateLinear``:
    "spectral" caps ||W||_2 = gamma; "weight" / "none" leave the cell unconstrained, to pair with the
    Jacobian penalty) and ``layer_options``, keyword arguments of ``ImplicitLayer`` (``z0``,
    ``z0_noise``, ``train_iterations``, ``jacobian_penalty``, ``correction_states``, ``warmup_steps``,
    ...: the training for test-time compute).
    Output dict: ``logit`` (B,), ``aux_logit`` (B,) for KD (an auxiliary head unless
    ``kd_on_main``), ``info`` (the implicit layer's LayerInfo, or None).
    """

    def __init__(
        self,
        schema: Schema,
        vocab_sizes: dict,
        *,
        rngs: nnx.Rngs,
        arch: str = "mlp",
        transfer: str = "none",
        embed_dim: int = 8,
        max_len: int = 50,
        hidden: tuple[int, ...] = (64, 32),
        fm_dim: int = 64,
        history_len: int = 20,
        d_state: int = 32,
        train_solver: SolverConfig | None = None,
        eval_solver: SolverConfig | None = None,
        kd_on_main: bool = False,
        parameterization: str = "spectral",
        gamma: float = 0.9,
        layer_options: dict | None = None,
        depth: int = 2,
        width: int = 32,
        node_dim: int = 8,
        graph_field: str = "cate_id",
    ):
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not supported; choose one of {', '.join(ARCHS)}.")
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer={transfer!r} is not supported; choose one of {', '.join(TRANSFERS)}.")
        if arch == "implicit-seq" and d_state % SEQUENCE_HEADS:
            raise ValueError(
                f"d_state={d_state} (vm.d_state) must be a multiple of {SEQUENCE_HEADS} for arch='implicit-seq' "
                f"(its attention has {SEQUENCE_HEADS} heads)."
            )
        if arch == "transformer" and (width % SEQUENCE_HEADS or depth < 1):
            raise ValueError(
                f"arch='transformer' needs depth >= 1 and a width that is a multiple of {SEQUENCE_HEADS} "
                f"(its attention heads), got depth={depth}, width={width}."
            )
        if arch == "implicit-graph":
            _check_graph_field(schema, vocab_sizes, graph_field)
        self.arch, self.transfer, self.kd_on_main = arch, transfer, kd_on_main
        self.graph_field = graph_field
        self.embed = FeatureEmbedder(schema, vocab_sizes, embed_dim, max_len, rngs=rngs)
        self.pairs = self.embed.match_pairs()
        e = embed_dim
        # d_x, the width of x: fields, candidate c, pooled history p, p * c, soft count, exact match counts
        d_x = self.embed.num_fields * e + 3 * e + 1 + len(self.pairs)
        if arch != "mlp":
            self.attention = DINAttention(e, self.embed.max_len, rngs=rngs)
        self.uses_loopfm = transfer.startswith("loopfm")
        self.uses_kd = transfer.endswith("kd")
        if self.uses_loopfm:
            self.loopfm_proj = initializers.linear(fm_dim, e, rngs=rngs)
            self.loopfm_attention = DINAttention(e, history_len, rngs=rngs)
            d_x += 3 * e + 1  # logged-history pooled l, l * c, its mean, its soft count
            d_x += len(self.embed.query_fields) * (e + 2)  # per candidate field: exact-match pooling
        if arch in SEQUENCE_ARCHS:  # one learned (e,) segment embedding per stream the cell reads
            self.segments = nnx.Param(
                nnx.initializers.normal(0.02)(rngs.params(), (1 + self.uses_loopfm, e), jnp.float32)
            )
        if self.is_implicit:
            well_posed = {"parameterization": parameterization, "gamma": gamma}
            if arch == "implicit":
                cell = MLPCell(d_state, d_x, rngs=rngs, **well_posed)
            elif arch == "implicit-graph":
                lengths = (self.embed.max_len,) * len(self._graph_sequences()) + (history_len,) * self.uses_loopfm
                self.node_counts = NodeCounts(vocab_sizes[graph_field], lengths, rngs=rngs, channels=GRAPH_CHANNELS)
                cell = GraphCell(
                    vocab_sizes[graph_field],
                    node_dim,
                    GRAPH_CHANNELS * len(lengths),
                    rngs=rngs,
                    **well_posed,
                )
                d_state = cell.d_state
            else:
                cell = SequenceCell(d_state, e, d_context=d_x, num_heads=SEQUENCE_HEADS, rngs=rngs, **well_posed)
            self.core = ImplicitLayer(
                cell,
                d_state,
                rngs=rngs,
                train_solver=train_solver or SolverConfig(max_iter=20),
                eval_solver=eval_solver,
                **(layer_options or {}),
            )
            last = d_state
            if arch == "implicit-graph":
                self.readout_mlp = MLP((node_dim + d_x,) + tuple(hidden), rngs=rngs)
                last = hidden[-1] + node_dim
        elif arch == "transformer":
            self.core = TransformerStack(d_x, e, width, depth, num_heads=SEQUENCE_HEADS, rngs=rngs)
            last = width
        else:
            self.core = MLP((d_x,) + tuple(hidden), rngs=rngs)
            last = hidden[-1]
        self.head = initializers.linear(last, 1, rngs=rngs)
        self.aux_head = initializers.linear(last, 1, rngs=rngs) if self.uses_kd and not kd_on_main else None

    @property
    def is_implicit(self) -> bool:
        """Whether the core is an ``ImplicitLayer`` (arch in ``IMPLICIT_ARCHS``)."""
        return self.arch in IMPLICIT_ARCHS

    def features(self, batch: dict) -> jax.Array:
        """The front-end vector x (B, width)."""
        return self._front_end(batch)[0]

    def core_input(self, batch: dict) -> jax.Array | dict:
        """What the core reads: x (B, width); for ``"implicit-seq"`` and ``"transformer"`` the dict
        ``{"sequence": (B, L + L2, e), "mask": (B, L + L2) bool, "context": x}`` (L2 = 0 without LoopFM);
        for ``"implicit-graph"`` ``{"nodes": (B, V, c), "context": x, "query": (B,) the candidate's id}``."""
        x, streams = self._front_end(batch)
        if self.arch == "implicit-graph":
            nodes = self.node_counts(self._graph_streams(batch))
            return {"nodes": nodes, "context": x, "query": batch[self.graph_field]}
        if self.arch not in SEQUENCE_ARCHS:
            return x
        segments = self.segments[...]
        seqs = [s + segments[i] for i, (s, _) in enumerate(streams)]
        return {
            "sequence": jnp.concatenate(seqs, axis=1),
            "mask": jnp.concatenate([m.astype(bool) for _, m in streams], axis=1),
            "context": x,
        }

    def _graph_sequences(self) -> tuple[str, ...]:
        """The behaviour-sequence columns in ``graph_field``'s vocabulary."""
        return tuple(col for col, vocab in self.embed.schema.sequences if vocab == self.graph_field)

    def _graph_streams(self, batch: dict) -> list[tuple[jax.Array, jax.Array]]:
        """(ids, mask) of every stream of ``graph_field`` ids: the behaviour sequences (last
        ``max_len``), then for LoopFM the logged requests' ads."""
        out = []
        for col in self._graph_sequences():
            ids = batch[col][:, -self.embed.max_len :]
            out.append((ids, ids > 0))
        if self.uses_loopfm:
            out.append((batch[f"loopfm_{self.graph_field}"], batch["loopfm_mask"]))
        return out

    def _front_end(self, batch: dict) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array]]]:
        """x (B, width) and the streams [(behaviour sequence (B, L, e), mask (B, L))], plus the
        projected LoopFM history (B, L2, e) and its mask for the LoopFM transfers."""
        e = self.embed(batch)
        cand, seq, mask = e["candidate"], e["sequence"], e["mask"]
        if self.arch == "mlp":
            pooled = jnp.sum(seq * mask[..., None], 1) / seq.shape[1]
            count = jnp.log1p(jnp.sum(mask, axis=1, keepdims=True).astype(cand.dtype))
        else:
            att = self.attention(cand, seq, mask)
            pooled, count = att["pooled"], att["count"]
        streams = [(seq, mask)]
        parts = [
            e["fields"].reshape(cand.shape[0], -1),
            cand,
            pooled,
            pooled * cand,
            count,
            match_counts(batch, self.pairs, self.embed.max_len).astype(cand.dtype),
        ]
        if self.uses_loopfm:
            hist, hmask = self.loopfm_proj(batch["loopfm"].astype(cand.dtype)), batch["loopfm_mask"]
            # keys: the FM's embedding of each logged request plus that request's ad (its item ids),
            # so the candidate finds the earlier requests about the same brand / category
            about = sum(self.embed.tables[c](batch[f"loopfm_{c}"]) for c in self.embed.query_fields)
            lf = self.loopfm_attention(cand, hist, hmask, keys=hist + about)
            mean = jnp.sum(hist * hmask[..., None], 1) / jnp.maximum(hmask.sum(1, keepdims=True), 1)
            parts += [lf["pooled"], lf["pooled"] * cand, mean, lf["count"]]
            parts += _same_ad_pooling(batch, hist, hmask, self.embed.query_fields)
            streams.append((hist, hmask))
        return jnp.concatenate(parts, axis=-1), streams

    def hidden(self, x: jax.Array | dict) -> jax.Array:
        """An explicit VM's last hidden layer (B, last) from what its core reads (:meth:`core_input`)."""
        return self.core(x) if self.arch == "transformer" else nnx.relu(self.core(x))

    def readout(self, z: jax.Array, x: jax.Array | dict) -> jax.Array:
        """An implicit VM's last hidden layer (B, last) from its state z and core input x: z itself,
        or for ``"implicit-graph"`` relu(MLP([the candidate's node state, x["context"]]))."""
        if self.arch != "implicit-graph":
            return z
        node = self.core.cell.read(z, x)
        return jnp.concatenate([nnx.relu(self.readout_mlp(jnp.concatenate([node, x["context"]], axis=-1))), node], -1)

    def state_logit(self, z: jax.Array, x: jax.Array | dict) -> jax.Array:
        """The main logit (B,) of an implicit VM at state z (any iterate z_k) for core input x."""
        return self.head(self.readout(z, x))[:, 0]

    def __call__(self, batch: dict) -> dict:
        x = self.core_input(batch)
        info = None
        if self.is_implicit:
            z, info = self.core(x)
            h = self.readout(z, x)
        else:
            h = self.hidden(x)
        logit = self.head(h)[:, 0]
        aux = self.aux_head(h)[:, 0] if self.aux_head is not None else logit
        return {"logit": logit, "aux_logit": aux, "info": info, "core_input": x}


def _check_graph_field(schema: Schema, vocab_sizes: dict, field: str) -> None:
    """implicit-graph's field: a candidate field that a behaviour sequence shares, of <= GRAPH_MAX_NODES ids."""
    if field not in schema.query_fields or not any(vocab == field for _, vocab in schema.sequences):
        raise ValueError(
            f"graph_field={field!r} (vm.graph_field) must be a candidate field that a behaviour sequence "
            f"shares; this data has {', '.join(schema.query_fields) or 'none'}."
        )
    if vocab_sizes[field] > GRAPH_MAX_NODES:
        raise ValueError(
            f"graph_field={field!r} (vm.graph_field) has {vocab_sizes[field]} ids; arch='implicit-graph' keeps "
            f"one state per id and allows at most {GRAPH_MAX_NODES}: choose a coarser field."
        )


def _same_ad_pooling(batch: dict, hist: jax.Array, mask: jax.Array, fields: tuple[str, ...]) -> list[jax.Array]:
    """Exact-match pooling of the logged history, per candidate field c (category, brand, ...).

    Over the logged requests whose ad had the candidate's id in c (``loopfm_<c>`` == ``c``; PAD/OOV
    never match): the mean projected FM embedding (B, e), the mean logged FM logit (B, 1) — what
    the FM thought of this user and an ad like the candidate — and log(1 + their number) (B, 1).
    """
    out = []
    for c in fields:
        same = (batch[f"loopfm_{c}"] == batch[c][:, None]) & (batch[c][:, None] > 1) & mask
        weight = same.astype(hist.dtype)
        n = jnp.sum(weight, axis=1, keepdims=True)
        denom = jnp.maximum(n, 1.0)
        logit = batch["loopfm_logit"].astype(hist.dtype)
        out += [
            jnp.einsum("bl,bld->bd", weight, hist) / denom,
            jnp.sum(weight * logit, axis=1, keepdims=True) / denom,
            jnp.log1p(n),
        ]
    return out


def bce_with_logits(logits: jax.Array, targets: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """Binary cross-entropy of sigmoid(logits) (B,) against (soft) targets in [0, 1] (B,): the mean,
    or the ``weight``-weighted mean sum(w l) / sum(w) (``training.fit`` weights padding rows 0)."""
    losses = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    if weight is None:
        return jnp.mean(losses)
    return jnp.sum(weight * losses) / jnp.maximum(jnp.sum(weight), 1.0)


def vm_loss(
    model: VerticalModel,
    batch: dict,
    kd_weight: float = 1.0,
    jacobian_weight: float = 0.0,
    correction_weight: float = 0.0,
) -> tuple[jax.Array, dict]:
    """BCE on the label, plus kd_weight * BCE(sigmoid(FM logit), sigmoid(aux logit)) for KD variants;
    weighted by ``batch["weight"]`` when present.

    For an implicit VM in training, two regularisers of its ``LayerInfo`` when the layer computes
    them: ``jacobian_weight * info.jacobian_penalty`` (the Hutchinson estimate of ||df/dz||_F^2 / d
    at z*) and ``correction_weight * sum_k w_k BCE(head(z_k), label)`` over the correction states
    (the fixed-point-correction loss: the states along the solver path must already score well).
    """
    out = model(batch)
    x = out["core_input"]
    w = batch.get("weight")
    loss = bce_with_logits(out["logit"], batch["label"], w)
    if model.uses_kd:
        loss = loss + kd_weight * bce_with_logits(out["aux_logit"], jax.nn.sigmoid(batch["fm_logit"]), w)
    info = out["info"]
    if info is not None and info.jacobian_penalty is not None and jacobian_weight:
        loss = loss + jacobian_weight * info.jacobian_penalty
    if info is not None and info.correction_states is not None and correction_weight:

        def path_loss(z):
            return bce_with_logits(model.state_logit(z, x), batch["label"], w)

        loss = loss + correction_weight * fixed_point_correction_loss(info, path_loss)
    return loss, out
