"""Benchmarks of the job API against baselines measured in the same run (`python -m bench`)."""
