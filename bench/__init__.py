"""`make bench`: how fast this service classifies photos, next to what the machine can do at best
(the ceiling) and what the original one-process design did (the baseline), from one run.

Run it with `python -m bench.run` (`--quick` for a smoke test of a few seconds per phase).
"""
