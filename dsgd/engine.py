"""DSGD on a 1-D mesh of JAX devices (one agent per device), gossip by ``jax.lax.ppermute``.

Per iteration k (round r = k mod period) every agent i, with its flat parameter vector x_i (D,)
and for CECA the auxiliary x̂_i:

    p_i = x_i if round r sends x else x̂_i          (the variable this round sends)
    u_i, s_i = optimizer(∇F_i(p_i; ξ_i), s_i)       (plain SGD: u_i = −γ ∇F_i)
    x_i ← x_i + u_i,  x̂_i ← x̂_i + u_i
    (x, x̂) ← round r of the topology                (one ppermute per message)

``complete`` replaces the gossip by one all-reduce mean. The step is one ``jax.shard_map`` over the
``agents`` axis; the distinct permutations are the branches of a ``lax.switch`` chosen by a
replicated step counter, so the step compiles once (``DSGD.compile``) for the whole run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .topology import Topology, check_count, check_topology

AXIS = "agents"


class DSGDState(NamedTuple):
    x: jax.Array  # (n, D), sharded over agents
    xhat: jax.Array | None  # (n, D) when a round sends x̂ (CECA, n not a power of two), else None
    opt_state: object  # optax state with a leading agent axis
    step: jax.Array  # () int32, replicated


def agent_mesh(n: int, devices: list | None = None) -> Mesh:
    """A 1-D mesh of the first ``n`` devices (all processes' devices in multi-process runs)."""
    n = check_count("agents", n, minimum=1)
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) < n:
        raise ValueError(
            f"agents={n} needs {n} JAX devices, found {len(devices)}; on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} (or "
            "jax.config.update('jax_num_cpu_devices', n)) before JAX starts."
        )
    return Mesh(np.array(devices[:n]), (AXIS,))


def put_agents(mesh: Mesh, local: dict | np.ndarray | list, global_n: int):
    """Stack per-agent host arrays into global (n, ...) arrays sharded over agents.

    ``local`` maps this process's agent indices to arrays (or pytrees) of identical shapes; every
    agent on a device this process addresses must be present.
    """
    sharding = NamedSharding(mesh, P(AXIS))
    devices = list(mesh.devices.flat)
    mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
    treedef = jax.tree.structure(local[mine[0]])
    per_agent = [jax.tree.leaves(local[i]) for i in mine]

    def build(j):
        shape = (global_n,) + np.shape(per_agent[0][j])
        arrays = [jax.device_put(np.asarray(leaves[j])[None], devices[i]) for i, leaves in zip(mine, per_agent)]
        return jax.make_array_from_single_device_arrays(shape, sharding, arrays)

    return jax.tree.unflatten(treedef, [build(j) for j in range(treedef.num_leaves)])


class DSGD:
    """Decentralized SGD for ``loss_fn(flat_params (D,), batch) -> scalar`` on ``topology``.

    ``optimizer`` is an optax transformation applied locally by every agent (default
    ``optax.sgd(lr)``). Batches are pytrees of global arrays (n, B, ...) sharded over agents.
    """

    def __init__(
        self,
        topology: Topology,
        loss_fn: Callable,
        lr: float = 0.1,
        optimizer: optax.GradientTransformation | None = None,
        mesh: Mesh | None = None,
    ):
        self.topology = check_topology(topology)
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be a function (flat_params, batch) -> scalar, got {loss_fn!r}.")
        self.n = topology.n
        self.mesh = agent_mesh(self.n) if mesh is None else mesh
        if self.mesh.devices.size != self.n:
            raise ValueError(f"mesh has {self.mesh.devices.size} devices, topology has n={self.n}.")
        self.loss_fn = loss_fn
        self.optimizer = optax.sgd(lr) if optimizer is None else optimizer
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self.replicated = NamedSharding(self.mesh, P())
        # x̂ is kept only if some round sends it (for n = 2^k CECA-2P sends x only: exp2-one-peer)
        self.two = topology.variables == 2 and any(r.sent == ("xhat",) for r in topology.rounds)
        self._compiled = self._compiled_period = None
        self.compiles = 0
        self._tables()

    # -- schedule as arrays and static branches -------------------------------------------
    def _tables(self):
        top = self.topology
        nv = top.variables
        self.perms = []  # distinct tuples of permutations (one per branch)
        branch, sends_x, keep, recv = [], [], [], []
        k_max = top.messages_per_round
        for rnd in top.rounds:
            if rnd.pairs not in self.perms:
                self.perms.append(rnd.pairs)
            branch.append(self.perms.index(rnd.pairs))
            if len(set(rnd.sent)) > 1:
                raise ValueError("a round must send one variable in all its messages.")
            sends_x.append(not rnd.sent or rnd.sent[0] == "x")
            keep.append(list(rnd.keep) + [1.0] * (2 - nv))
            recv.append([list(rv) + [0.0] * (k_max - len(rv)) for rv in rnd.recv] + [[0.0] * k_max] * (2 - nv))
        self.k_max = k_max
        self.branch = np.array(branch, np.int32)
        self.sends_x = np.array(sends_x)
        self.keep = np.array(keep, np.float64)  # (period, 2)
        self.recv = np.array(recv, np.float64).reshape(top.period, 2, k_max)  # (period, 2, K)

    def bytes_per_iteration(self, dim: int, itemsize: int = 4) -> float:
        """Bytes each agent sends per iteration (mean over a period); all-reduce: ring estimate 2(n−1)/n·D."""
        if self.topology.allreduce:
            return 2 * (self.n - 1) / self.n * dim * itemsize
        sent = [len(r.pairs) for r in self.topology.rounds]
        return float(np.mean(sent)) * dim * itemsize

    # -- the per-agent step inside shard_map ------------------------------------------------
    def _local_step(self, x, xhat, opt_state, step, batch, rnd: int | None = None):
        """One iteration on one agent's shards (leading dim 1). ``rnd``: a static round index
        (period-unrolled step, plain ppermutes) or None (round from ``step``, ``lax.switch``)."""
        top = self.topology
        r = step % top.period if rnd is None else rnd
        two = self.two
        sends_x = jnp.asarray(self.sends_x)[r] if rnd is None else bool(self.sends_x[rnd])
        p = jnp.where(sends_x, x, xhat) if two else x
        local_batch = jax.tree.map(lambda a: a[0], batch)
        local_opt = jax.tree.map(lambda a: a[0], opt_state)
        loss, g = jax.value_and_grad(self.loss_fn)(p[0], local_batch)
        u, local_opt = self.optimizer.update(g, local_opt, p[0])
        x = x + u[None]
        if two:
            xhat = xhat + u[None]
        opt_state = jax.tree.map(lambda a: a[None], local_opt)
        if top.allreduce:
            x = jax.lax.pmean(x, AXIS)
        elif self.k_max:
            send = jnp.where(sends_x, x, xhat) if two else x

            def branch(perms):  # static permutations of this round; absent messages are zeros
                return lambda v: (
                    tuple(jax.lax.ppermute(v, AXIS, perm=list(pm)) for pm in perms)
                    + ((jnp.zeros_like(v),) * (self.k_max - len(perms)))
                )

            if rnd is None:
                received = jax.lax.switch(jnp.asarray(self.branch)[r], [branch(pm) for pm in self.perms], send)
            else:
                received = branch(top.rounds[rnd].pairs)(send)
            keep, recv = jnp.asarray(self.keep, x.dtype)[r], jnp.asarray(self.recv, x.dtype)[r]
            x = keep[0] * x + sum(recv[0, k] * received[k] for k in range(self.k_max))
            if two:
                xhat = keep[1] * xhat + sum(recv[1, k] * received[k] for k in range(self.k_max))
        return x, xhat, opt_state, step + 1, loss[None]

    def _local_period(self, x, xhat, opt_state, step, batches):
        """A whole period unrolled: iteration r uses ``batches[:, r]`` and round r's static permutation."""
        losses = []
        for r in range(self.topology.period):
            x, xhat, opt_state, step, loss = self._local_step(
                x, xhat, opt_state, step, jax.tree.map(lambda a, r=r: a[:, r], batches), rnd=r
            )
            losses.append(loss)
        return x, xhat, opt_state, step, jnp.stack(losses, axis=1)

    def _period(self, state: DSGDState, batches):
        spec = P(AXIS)
        f = jax.shard_map(
            self._local_period,
            mesh=self.mesh,
            in_specs=(spec, spec, spec, P(), spec),
            out_specs=(spec, spec, spec, P(), spec),
            check_vma=False,  # see _step
        )
        x, xhat, opt, step, loss = f(state.x, state.xhat, state.opt_state, state.step, batches)
        return DSGDState(x, xhat, opt, step), loss

    def period_step(self, state: DSGDState, batches) -> tuple[DSGDState, jax.Array]:
        """One whole period (τ iterations) in one call, without ``lax.switch``: batches are
        (n, τ, B, ...) and ``state.step`` must be a multiple of τ. Returns losses (n, τ).
        Same result as τ calls of :meth:`step`; compiled once (separately from ``step``)."""
        if int(state.step) % self.topology.period:
            raise ValueError(
                f"period_step needs state.step at a period boundary (multiple of "
                f"{self.topology.period}), got {int(state.step)}."
            )
        return self.compile_period(state, batches)(state, batches)

    def compile_period(self, state: DSGDState, batches):
        """Compile the period-unrolled step once for these shapes; returns the executable."""
        if self._compiled_period is None:
            self._compiled_period = jax.jit(self._period, donate_argnums=0).lower(state, batches).compile()
            self.compiles += 1
        return self._compiled_period

    def _step(self, state: DSGDState, batch):
        spec = P(AXIS)
        f = jax.shard_map(
            self._local_step,
            mesh=self.mesh,
            in_specs=(spec, spec, spec, P(), spec),
            out_specs=(spec, spec, spec, P(), spec),
            # no varying-axis type check: a loss may run lax.while_loop / custom_vjp solvers (the
            # implicit VMs' fixed points), whose closed-over parameters the check re-marks as
            # varying and then rejects; the agents' values are per-device either way
            check_vma=False,
        )
        x, xhat, opt, step, loss = f(state.x, state.xhat, state.opt_state, state.step, batch)
        return DSGDState(x, xhat, opt, step), loss

    # -- public API -------------------------------------------------------------------------
    def init(self, x0, dtype=np.float32) -> DSGDState:
        """Agents start from ``x0``: (D,) the same vector for all, or (n, D) one row each; x̂ = x."""
        x0 = np.asarray(x0, dtype)
        rows = np.broadcast_to(x0, (self.n, x0.shape[-1]))
        x = put_agents(self.mesh, {i: rows[i] for i in range(self.n)}, self.n)
        xhat = put_agents(self.mesh, {i: rows[i] for i in range(self.n)}, self.n) if self.two else None
        opt0 = self.optimizer.init(jnp.asarray(rows[0]))
        opt = put_agents(self.mesh, {i: jax.tree.map(np.asarray, opt0) for i in range(self.n)}, self.n)
        step = jax.device_put(jnp.zeros((), jnp.int32), self.replicated)
        return DSGDState(x, xhat, opt, step)

    def compile(self, state: DSGDState, batch):
        """Compile the step once for these shapes (donating the state); returns the executable."""
        if self._compiled is None:
            self._compiled = jax.jit(self._step, donate_argnums=0).lower(state, batch).compile()
            self.compiles += 1
        return self._compiled

    def step(self, state: DSGDState, batch) -> tuple[DSGDState, jax.Array]:
        """One DSGD iteration; returns the new state and the per-agent losses (n,)."""
        return self.compile(state, batch)(state, batch)

    def hlo_text(self, state: DSGDState, batch) -> str:
        return self.compile(state, batch).as_text()


def _stats(x):
    mean = jnp.mean(x, axis=0)
    return mean, jnp.mean(jnp.sum((x - mean) ** 2, axis=1))


class Monitor:
    """Measurement outside the training step: mean model x̄, consensus (1/n)Σ||x_i − x̄||², x_0."""

    def __init__(self, mesh: Mesh):
        rep = NamedSharding(mesh, P())
        self._stats = jax.jit(_stats, out_shardings=(rep, rep))
        self._agent = jax.jit(lambda x, i: x[i], static_argnums=1, out_shardings=rep)
        self._gather = jax.jit(lambda v: v, out_shardings=rep)

    def consensus(self, x) -> tuple[np.ndarray, float]:
        mean, dist = self._stats(x)
        return np.asarray(mean), float(dist)

    def agent(self, x, i: int) -> np.ndarray:
        return np.asarray(self._agent(x, i))

    def gather(self, v) -> np.ndarray:
        return np.asarray(self._gather(v))


def count_collectives(hlo: str) -> dict:
    """Counts of collective ops in compiled HLO text (ops, not their -start/-done halves twice)."""
    out = {}
    for op in ("collective-permute", "all-reduce", "all-gather", "all-to-all", "reduce-scatter"):
        # "collective-permute(" or "collective-permute-start(" defines an op instance
        out[op] = len(re.findall(rf"= [^=\n]*\b{op}(?:-start)?\(", hlo))
    return out
