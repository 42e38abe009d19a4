"""The edge: what comes in from outside.

Raw messages decoded into typed records, or dead-lettered with a reason code; image bytes
fetched from URIs under guard rails.
"""
