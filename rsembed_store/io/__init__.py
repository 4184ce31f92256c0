"""Files in and out: bulk import of existing embeddings, export to the formats the field reads.

See ``docs/io.md``. Modules: ``model`` (the ``imported:<name>`` declaration),
``keys`` (content keys for whole columns), ``columns`` (finding and checking the
columns of an input table), ``importer`` (the streamed import), ``geoparquet``
(reading and writing GeoParquet geometry), ``exporter`` (the streamed export).
"""
