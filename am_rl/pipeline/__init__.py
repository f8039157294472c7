"""The whole AM pipeline on one machine (``make pipeline``): ``python -m am_rl.pipeline``."""
