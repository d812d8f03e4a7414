"""The device engine (shard_map + ppermute) against the numpy reference, on 6 virtual CPU devices.

JAX fixes its device count when the backend starts, so the device checks run in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dsgd import count_collectives, dsgd_reference, make_topology

ROOT = Path(__file__).resolve().parents[1]


def subprocess_env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} --xla_cpu_multi_thread_eigen=false"
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)
    )
    return env


SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from dsgd import DSGD, TOPOLOGIES, count_collectives, make_topology, put_agents

    n, d, B, steps = 6, 4, 5, 7
    rng = np.random.default_rng(0)
    A = rng.normal(size=(n, steps, B, d)); y = rng.normal(size=(n, steps, B))
    x0 = rng.normal(size=(n, d))
    loss = lambda x, b: 0.5 * jnp.mean((b["a"] @ x - b["y"]) ** 2)
    out = {"devices": len(jax.devices())}
    for name, n in [(t, 6) for t in TOPOLOGIES] + [("ceca-2p", 4), ("ceca-2p", 5)]:
        top = make_topology(name, n)
        eng = DSGD(top, loss, lr=0.1)
        st = eng.init(x0[:n], dtype=np.float64)
        for k in range(steps):
            batch = put_agents(eng.mesh, {i: {"a": A[i, k], "y": y[i, k]} for i in range(n)}, n)
            st, l = eng.step(st, batch)
        gossip_only = DSGD(top, loss, lr=0.0)
        g = gossip_only.init(x0[:n], dtype=np.float64)
        for k in range(top.period):
            g, _ = gossip_only.step(g, batch)
        out[name if n == 6 else f"{name}/{n}"] = {
                     "x": np.asarray(st.x).tolist(), "step": int(st.step), "compiles": eng.compiles,
                     "xhat_kept": st.xhat is not None,
                     "gossip": np.asarray(g.x).tolist(), "hlo": count_collectives(eng.hlo_text(st, batch)),
                     "branch_messages": [len(p) for p in eng.perms]}
    for name in ("ceca-2p", "ceca-1p", "complete"):  # period-unrolled step: no lax.switch, same result
        top = make_topology(name, n := 6)
        eng = DSGD(top, loss, lr=0.1)
        st = eng.init(x0, dtype=np.float64)
        for k0 in range(0, 2 * top.period, top.period):
            stacked = {"a": A[:, k0:k0 + top.period], "y": y[:, k0:k0 + top.period]}
            st, l = eng.period_step(st, put_agents(eng.mesh, {i: {"a": stacked["a"][i], "y": stacked["y"][i]}
                                                            for i in range(n)}, n))
        out["period/" + name] = {"x": np.asarray(st.x).tolist(), "steps": 2 * top.period,
                                 "hlo": count_collectives(eng.compile_period(st, None).as_text())}
    json.dump(out, sys.stdout)
""")


@pytest.fixture(scope="module")
def device_run():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=subprocess_env(6), cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _reference(name, n=6):
    d, B, steps = 4, 5, 7
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, steps, B, d))
    y = rng.normal(size=(6, steps, B))
    x0 = rng.normal(size=(6, d))[:n]

    def grad(k, X):
        return np.stack([A[i, k].T @ (A[i, k] @ X[i] - y[i, k]) / B for i in range(n)])

    return dsgd_reference(make_topology(name, n), grad, x0, 0.1, steps), x0


@pytest.mark.parametrize(
    "name", ["ceca-2p", "ceca-1p", "exp2-one-peer", "static-exp", "ring", "torus", "complete", "ceca-2p/4", "ceca-2p/5"]
)
@pytest.mark.slow
def test_device_engine_matches_host_reference_on_6_devices(device_run, name):
    assert device_run["devices"] == 6
    r = device_run[name]
    top, _, n = name.partition("/")
    ref, x0 = _reference(top, int(n or 6))
    np.testing.assert_allclose(np.array(r["x"]), ref, rtol=1e-10, atol=1e-12)
    assert r["step"] == 7 and r["compiles"] == 1
    # x̂ is carried only when a round sends it: CECA with n not a power of two
    assert r["xhat_kept"] == (name in ("ceca-2p", "ceca-1p", "ceca-2p/5"))
    if name.startswith("ceca") or name == "complete":  # pure gossip for one period: exact mean on device
        np.testing.assert_allclose(np.array(r["gossip"]), np.broadcast_to(x0.mean(0), x0.shape), atol=1e-12)


@pytest.mark.parametrize("name", ["ceca-2p", "ceca-1p", "exp2-one-peer", "ring", "complete"])
@pytest.mark.slow
def test_compiled_step_has_one_permute_per_message_and_no_all_reduce(device_run, name):
    r = device_run[name]
    if name == "complete":
        assert r["hlo"]["all-reduce"] == 1 and r["hlo"]["collective-permute"] == 0
        return
    assert r["hlo"]["all-reduce"] == 0 and r["hlo"]["all-gather"] == 0
    assert r["hlo"]["collective-permute"] == sum(r["branch_messages"])
    if name.startswith("ceca") or name == "exp2-one-peer":
        assert set(r["branch_messages"]) == {1}  # one message per agent per iteration, every branch


@pytest.mark.parametrize("name", ["ceca-2p", "ceca-1p", "complete"])
@pytest.mark.slow
def test_period_unrolled_step_matches_reference(device_run, name):
    r = device_run["period/" + name]
    n, d, B, steps = 6, 4, 5, r["steps"]
    rng = np.random.default_rng(0)
    A, y, x0 = rng.normal(size=(n, 7, B, d)), rng.normal(size=(n, 7, B)), rng.normal(size=(n, d))

    def grad(k, X):
        return np.stack([A[i, k].T @ (A[i, k] @ X[i] - y[i, k]) / B for i in range(n)])

    ref = dsgd_reference(make_topology(name, n), grad, x0, 0.1, steps)
    np.testing.assert_allclose(np.array(r["x"]), ref, rtol=1e-10, atol=1e-12)
    if name != "complete":  # one permute per iteration of the period, no all-reduce
        assert r["hlo"]["collective-permute"] == make_topology(name, n).period and r["hlo"]["all-reduce"] == 0


def test_count_collectives_parses_start_and_plain_ops():
    hlo = (
        "%a = f32[3] collective-permute-start(f32[3] %x), source_target_pairs={{0,1}}\n"
        "%b = f32[3] collective-permute-done(%a)\n%c = f32[] all-reduce(f32[] %y), to_apply=%sum\n"
    )
    assert count_collectives(hlo)["collective-permute"] == 1
    assert count_collectives(hlo)["all-reduce"] == 1
