"""PRo-MoE: Mixture-of-Experts models whose routing is generated from a task's description."""

__version__ = "0.1.0"
