"""Pipelines: loading and placement, the random tiny test pipelines and the trained built-in model."""
