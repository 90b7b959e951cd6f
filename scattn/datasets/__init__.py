"""Datasets: bundled (via scanpy) or local files; nothing is downloaded."""

from ._datasets import pbmc68k_reduced, pbmc68k_reference_query, read_local, shared_data_dir

__all__ = ["pbmc68k_reduced", "pbmc68k_reference_query", "read_local", "shared_data_dir"]
