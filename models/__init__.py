"""The ML of visrec, pure: nothing here imports Kafka, faust or Redis.

``vision/`` (images to vectors), ``index/`` (the retrieval space and the item index),
``interest`` (the interest rule), ``profile`` + ``ranking`` + ``refresh`` (the refresh of a
batch of users), ``offline/`` (collaborative filtering, baselines, metrics), ``exceptions``.
"""
