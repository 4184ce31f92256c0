"""One benchmark of rsembed_store against the alternatives, on data it builds itself.

``python -m scripts.bench`` builds every input deterministically (seeded
cluster-structured vectors with place and year metadata, the synthetic
Sentinel-2-like scene, a synthetic gse product file), runs the sections
(``retrieval``, ``search``, ``filtered``, ``ingest``, ``sql``) and writes
``report.json`` plus ``report.md``. Each section compares the store with what
people would otherwise use, on the same data in the same run: recomputing the
answer, exact numpy, FAISS, DuckDB brute force.

Modules: :mod:`.config` (sizes of the full and the quick run), :mod:`.data`
(vectors, metadata, rows), :mod:`.workspace` (what several sections share,
built once), :mod:`.engines` (the compared search engines), :mod:`.timing` and
:mod:`.machine` (how figures are taken and where), one module per section
(:mod:`.retrieval`, :mod:`.search`, :mod:`.filtered`, :mod:`.ingest`,
:mod:`.sql`), and :mod:`.render` (report.json -> markdown).
The page that publishes the numbers is ``docs/benchmarks.md``.
"""
