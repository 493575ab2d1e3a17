"""Runnable studies: ``python -m experiments --help`` lists them."""
