"""Logstream's benchmark: fan-out, latency, memory, ingest, flood and replay, side by side with
nginx + Nchan in the same run. ``python -m bench`` (or ``python bench/run.py``); see README.md."""
