"""Hand-run benchmarks: `python -m bench.<name> --help` from the repository root (see bench/README.md)."""
