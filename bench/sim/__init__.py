"""Discrete-event simulator of vLLM instances behind a routing policy (a simulator, not a benchmark of real engines)."""
