"""Runnable studies: ``gaitcircuit --help`` (or ``python -m experiments --help``) lists them."""
