"""Baseline personalization methods (shipped as ``dep_eval.baselines``)."""
