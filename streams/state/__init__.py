"""State in Redis.

Users' interest state and its Lua scripts, the global signals, the cached lists, item vectors
and retrieval spaces, and the Redis client.
"""
