"""Benchmarks: nalox figures beside bare-library baselines measured in the same run."""
