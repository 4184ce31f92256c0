"""The query wing: everything that SERVES embeddings (get, search, SQL)."""
