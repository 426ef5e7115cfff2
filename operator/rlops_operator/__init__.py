"""rlops operator: promote checkpoints named by ``best_checkpoint.txt`` into Ray Serve.

The promotion engine (:mod:`rlops_operator.engine`) is a plain library; the kopf wiring lives in
:mod:`rlops_operator.handlers` and the command line in :mod:`rlops_operator.cli`. Nothing here
imports Ray or torch.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
