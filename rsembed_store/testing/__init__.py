"""Seeded synthetic fixtures: Sentinel-like scenes with ground truth and precomputed products.

They make test data and demo data in the real on-disk layouts the providers and
product readers read; they are not part of the ingest path. ``scenes`` writes
optical/SAR scene directories (``generate_scene``, ``ensure_scene``, ...),
``products`` writes gse/tessera/copernicus files.
"""
