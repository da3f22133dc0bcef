"""Benchmarks of the token service: refresh-grant throughput and latency (`make bench`).

`python -m bench` measures, in one run: the JWT-signing ceiling (the baseline), what the load
generator alone can do against a trivial endpoint, and the real service's refresh grant on
SQLite and on PostgreSQL, closed-loop at fixed concurrency and open-loop at a fixed rate.
Results are printed and written to docs/benchmarks.md.
"""
