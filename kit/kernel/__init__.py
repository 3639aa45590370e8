"""What runs inside a step's kernel: the notebook API (`api`), LLM calls (`llm`, `providers`,
`recordings`) and the warm engine's reset (`warm`). Cheap to import: it happens in every kernel.
A kernel writes only its step's spool, never the ledger."""
