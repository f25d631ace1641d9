"""Benchmarks: `make bench` (not run by CI). Each writes JSON under bench/results/."""
