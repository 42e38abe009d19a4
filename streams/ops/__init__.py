"""Operator tools on a running system.

Dead letters, status, re-embedding, publishing vectors. Built on the runtime packages; the
workers never import them.
"""
