"""am_rl: GRPO for reasoning LLMs on verl, with the AM-Thinking-v1 rollout system.

Importing the package registers ``am_grpo`` in verl's advantage-estimator registry.
"""

from am_rl import algos  # noqa: F401  (registers verl extensions)

__version__ = "0.1.0"
