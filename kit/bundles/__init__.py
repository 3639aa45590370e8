"""Bundles: a workflow and every file it depends on, content-addressed (`lock`: files, lock, id,
snapshots, materializing), and the references that name past ones (`refs`)."""
