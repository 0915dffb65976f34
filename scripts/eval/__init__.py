"""Evaluation: the metric CLIs (compute_kid, eval_cityscapes, diversity, collect_results) and the helpers only
they and the convergence study use (kid, cityscapes, pairwise_distances, weights)."""
