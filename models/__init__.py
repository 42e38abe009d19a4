"""The ML of visrec: image decoding, the ONNX encoder, interest updates, retrieval, ranking.

Pure code: nothing here imports Kafka, faust or Redis.
"""
