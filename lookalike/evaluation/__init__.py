"""Retrieval metrics and the evaluation of a build or a folder of photos."""
