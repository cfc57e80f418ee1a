"""Benchmarks of shadowdns against its peers; run them with `python -m bench.run`."""
