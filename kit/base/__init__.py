"""Small helpers every layer of kit uses: canonical JSON, the clock and ids, JSON lines,
short renderings for messages, value kinds, backoff, progress, YAML with line numbers and
the plugin registries. Nothing here knows about workflows, runs or the ledger."""
