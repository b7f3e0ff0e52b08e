"""Serving: the runtime that answers requests from the live model and the latest events."""
