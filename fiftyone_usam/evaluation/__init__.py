"""Evaluation: metrics, FiftyOne evaluation runs and reports, benchmark datasets, baselines."""
