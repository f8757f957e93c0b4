"""Resumable requests: the request log (memory or Redis) and how it is built."""
