"""Tools around the system.

The demo, the evaluations, local Kafka/Redis services and worker processes (for development,
tests and benchmarks), and the configuration docs generator.
"""
