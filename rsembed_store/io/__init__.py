"""Files in and out: bulk import of existing embeddings, export to the formats the field reads.

See ``docs/io.md``. Modules: ``model`` (the ``imported:<name>`` declaration),
``keys`` (content keys for whole columns), ``columns`` (finding and checking the
columns of an input table), ``wkb`` (WKB geometry for whole columns),
``importer`` (the streamed import), ``exporter`` (the streamed export).
"""

from .exporter import ExportResult, export
from .importer import ImportResult, import_table
from .model import declare_from_store, declare_imported

__all__ = ["import_table", "ImportResult", "export", "ExportResult", "declare_imported", "declare_from_store"]
