"""Ranking with auxiliary tasks (PMTRec, Yang et al. 2024): interaction data, tasks, the training
loop over per-task gradients of the embedding table, full-ranking evaluation."""
