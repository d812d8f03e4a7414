"""Implicit models outside recommendation: the Implicit Models paper's three validation domains.

Each study module builds its data, its implicit and explicit models and its test-time-iteration sweep,
and exposes one :class:`~implicit_rec.domains.study.Study` as ``STUDY``:

- :mod:`implicit_rec.domains.lp` — linear programs on the constraint/variable bipartite graph;
- :mod:`implicit_rec.domains.deblur` — image deblurring with a learned proximal-gradient fixed point;
- :mod:`implicit_rec.domains.pde_study` — a steady nonlinear elliptic PDE (:mod:`~implicit_rec.domains.pde`)
  with an implicit Fourier operator.

One command runs any of them: ``python -m implicit_rec.domains NAME`` (:mod:`implicit_rec.domains.cli`);
the scripts ``experiments/domain_<name>.py`` call it. The LP labels need scipy and the deblurring crops
scikit-image: ``pip install 'implicit-rec[domains]'``.
"""
