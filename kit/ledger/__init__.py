"""Where kit keeps what happened: the DuckDB ledger (`ledger`: every statement, by name; `database`:
the file, its locks and journal; `schema`: the tables), the content-addressed object store
(`objects`), the hash-chained audit trail (`audit`) and retention (`retention`, `kit gc`)."""
