"""Benchmarks: suites of (env id, seeds), the rollout runner, results tables and plots,
and the env speed benchmark. Nothing imports this package."""
