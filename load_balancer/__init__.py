"""Metrics-aware streaming load balancer for detached vLLM rollout (DESIGN.md §3.2)."""
