"""Serving: the continuous-batching engine (engine.py) and the OpenAI-compatible HTTP server around it."""
