"""implicit-rec: implicit layers, LoopFM vertical models and decentralized training (recommendation side).

Built on the domain-agnostic ``solvers`` package. Subpackages arrive with their issues.
"""

__version__ = "0.1.0"
