"""The workflow store's commands (DESIGN section 12): publish and yank (`publish`), install and running
what is installed or promoted (`install`), promote and the promotion history (`promote`), search and
show (`catalog`). They need verification and execution; the store as storage, which lower layers
(composition) use too, is `kit.bundles.store`."""
