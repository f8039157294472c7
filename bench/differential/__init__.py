"""Differential tests of the reward verifiers: seeded corpora, the reference verifiers, and the deviations table."""
