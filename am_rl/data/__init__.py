"""Datasets: synthetic arithmetic for the CPU demo and tests."""
