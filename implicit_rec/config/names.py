"""The names a configuration uses: the allowed values of the choice keys, the renamed keys, the glossary.

Each choice list is defined once, here; the sections (``sections.py``), the CLIs and the models take
them from ``implicit_rec.config``.
"""

from solvers._options import METHODS as SOLVER_METHODS

ARCHS = ("mlp", "din", "implicit", "implicit-seq", "implicit-graph", "transformer")  # VM architectures
IMPLICIT_ARCHS = ("implicit", "implicit-seq", "implicit-graph")  # the VM archs whose core is an ImplicitLayer
EXPLICIT_ARCHS = tuple(a for a in ARCHS if a not in IMPLICIT_ARCHS)  # explicit cores (the baselines' archs)
SEQUENCE_ARCHS = ("implicit-seq", "transformer")  # the archs whose core reads the sequences (core_input's dict)
BASELINE_MATCHES = ("params", "flops")  # what an explicit baseline's width matches (sweep.baseline_match)
TRANSFERS = ("none", "kd", "loopfm", "loopfm+kd")  # how a VM uses the FM
METHODS = SOLVER_METHODS  # fixed-point solvers
PARAMETERIZATIONS = ("spectral", "weight", "none")  # state map of an implicit cell (layers.StateLinear)
Z0_MODES = ("zeros", "learned")  # initial state of an implicit layer
OPTIMIZERS = ("sgd", "momentum", "adam")  # local update rule of every DSGD agent
SHARDINGS = ("iid", "by-user")  # how DSGD agents split the training rows
RELEASES = ("taobaoad", "kuaivideo", "amazonelectronics")  # BARS releases: a directory with train.csv, test.csv
SOURCES = ("synthetic", *RELEASES, "interactions")  # data.source (loaders: implicit_rec.data.LOADERS)
RELEASE_FILES = ("train.csv", "test.csv")

# Keys that were renamed: old -> new. Reading an old key is an error that names the new one.
RENAMED = {
    "vm.implicit_method": "vm.method",
    "vm.implicit_train_iters": "vm.train_max_iter",
    "vm.implicit_eval_iters": "vm.eval_max_iter",
}

# Keys that were removed for other keys of another meaning: old -> what to use instead. Reading an
# old key is an error that says so.
REPLACED = {
    "sweep.baselines": "sweep.baseline_archs, sweep.baseline_depths and sweep.baseline_match (the widths "
    "are now chosen to match the implicit VM's parameters or FLOPs)",
    "sweep.baseline_arch": "sweep.baseline_archs (a list)",
}

# The one name of each recurring setting (docs/configuration.md prints this table).
GLOSSARY = {
    "max_iter": "a fixed-point solver's iteration cap (`vm.train_max_iter`, `vm.eval_max_iter`; `SolverConfig`)",
    "tol": "a solver's tolerance on the relative residual (`vm.train_tol`, `vm.eval_tol`)",
    "method": 'the fixed-point solver, "anderson" or "picard" (`vm.method`, `sweep.methods`)',
    "iterations": "the test-time iteration counts k of a sweep (`sweep.iterations`; sweep rows carry `iterations`)",
    "steps": "a fixed number of steps, taken without a stopping test: optimizer steps (`dsgd.steps`, the "
    "domains' training steps) and exact solver iterations (`solvers.iterate(steps=k)`, "
    "`ImplicitLayer.trajectory(steps=k)`)",
    "epochs": "passes over the training rows, with early stopping (`fm.epochs`, `vm.epochs`)",
    "learning_rate": "an optimizer's step size (never `lr`)",
    "lipschitz_examples": "test examples of the empirical Lipschitz estimate (`sweep.lipschitz_examples`)",
    "lipschitz_perturbations": "random perturbations per example (`sweep.lipschitz_perturbations`)",
    "lipschitz_scale": "perturbation norm relative to the input's norm (`sweep.lipschitz_scale`)",
}
