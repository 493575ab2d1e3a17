"""Metrics and plots.  Functions take arrays (and a matplotlib ``ax``); they never simulate."""
