"""Training loops (kept apart from models and from gradient aggregation)."""
