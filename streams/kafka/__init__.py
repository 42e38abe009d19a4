"""Kafka for the workers.

The faust app, topic declarations, client configuration, producing, subscribing, and natural
batching of a stream.
"""
