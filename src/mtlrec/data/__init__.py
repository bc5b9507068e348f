"""Raw data sources, per-dataset readers, encoding and in-memory batching."""
