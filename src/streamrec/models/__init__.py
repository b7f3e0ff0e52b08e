"""Recommenders: the text-aware sequential model and the baselines it must beat."""
