"""Kafka and Redis plumbing: settings, topics, edge decoding, the faust app, the CLI."""
