"""Offline models and measures.

Collaborative filtering (ALS/BPR), the baselines a replay is compared with, ranking metrics.
"""
