"""Benchmarks of scattn models against peers (not part of the test suite)."""
