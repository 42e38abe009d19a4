"""Images to vectors.

Guarded decoding and preprocessing, the ONNX encoder (export, model cards, runtime) and the
pipelined embedder; the bundled sample photos.
"""
