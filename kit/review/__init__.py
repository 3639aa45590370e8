"""Looking back at runs: figures (`figures`), the explorer in Jupyter (`explorer`), the HTML report
(`report`) and the diff of two runs (`diff`); all read the ledger through `kit.ledger.history`."""
