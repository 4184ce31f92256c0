"""The ingest wing: everything that PRODUCES embeddings.

planning (regions -> H3 cells x time windows), providers (imagery), models
(precomputed readers and on-the-fly embedders), and the cache-first engine.
"""
