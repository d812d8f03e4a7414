"""Package boundaries: the solver core, the DSGD engine and the layers load without the recommendation stack.

Each import runs in a fresh interpreter (this process has loaded everything already) and reports
the modules it loaded.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("pyarrow", "scipy", "skimage", "matplotlib", "tqdm")


def loaded_after(statement: str) -> set[str]:
    """Names of the modules in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def _top(modules: set[str], names) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


@pytest.mark.parametrize("package", ["dsgd", "solvers"])
def test_generic_packages_load_no_flax_and_no_recommendation_code(package):
    modules = loaded_after(f"import {package}")
    assert package in modules  # the probe sees what it imported
    assert _top(modules, ("flax", "implicit_rec")) == []
    assert _top(modules, HEAVY) == []


def test_layers_load_no_data_pipeline_or_training_stack():
    modules = loaded_after("import implicit_rec.layers")
    assert "implicit_rec.layers" in modules
    upper = ("data", "loopfm", "pipeline", "decentralized", "sweep", "domains", "report")
    assert sorted(m for m in modules if m.split(".")[:2][-1] in upper and m.startswith("implicit_rec.")) == []
    assert _top(modules, HEAVY + ("dsgd",)) == []


def test_data_loaders_load_pyarrow_only_to_read_parquet():
    modules = loaded_after("import implicit_rec.data")
    assert "implicit_rec.data.interactions" in modules
    assert _top(modules, ("pyarrow",)) == []


def test_decentralized_reexports_the_dsgd_engine():
    import dsgd
    import implicit_rec.decentralized as rec

    for name in rec.__all__:
        assert getattr(rec, name) is getattr(dsgd, name), name
    assert {"make_topology", "TOPOLOGIES", "gossip", "mixing_matrix", "period_matrix"} <= set(rec.__all__)
