"""Metrics: point detection (here) and cellularity agreement."""
