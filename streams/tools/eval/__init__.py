"""Evaluation on public data: MovieLens-100k replay through the real pipeline, embeddings."""
