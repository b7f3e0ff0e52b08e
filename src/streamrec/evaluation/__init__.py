"""Offline and streaming evaluation: metrics, leave-one-out splits, full-ranking evaluation."""
