"""Sending what the ledger recorded to other systems: `kit export otlp` (`kit.export.otlp`).

A reader of the ledger, at the level of review and the store: it reads through the
ledger's named operations (`kit.ledger.ledger.Ledger`, `kit.ledger.history.History`) and
the object store, never writes either, and holds no SQL.
"""
