"""Whole-store tools: the command line, info, verify, convert, export to Zarr v3."""
