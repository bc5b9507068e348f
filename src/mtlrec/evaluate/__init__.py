"""Metrics, cost measurements and statistics."""
