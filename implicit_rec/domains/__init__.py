"""Implicit models outside recommendation: the Implicit Models paper's three validation domains.

Each submodule builds its data, its implicit and explicit models and its test-time-iteration sweep:

- :mod:`implicit_rec.domains.lp` — linear programs on the constraint/variable bipartite graph;
- :mod:`implicit_rec.domains.deblur` — image deblurring with a learned proximal-gradient fixed point;
- :mod:`implicit_rec.domains.pde` — a steady nonlinear elliptic PDE with an implicit Fourier operator.

The experiment scripts ``experiments/domain_<name>.py`` are thin wrappers around these modules.
"""
