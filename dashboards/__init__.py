"""Comparison dashboards: the ledger's sweeps as the paper's figures and a report.

load (ledger -> pandas, the one reader) -> aggregate (pure pandas) -> figures (matplotlib,
DataFrame in, Figure out) -> report (index.html, PNGs, summary.csv/json). The entry point
is ``dashboards.report.write_report(source, sweep_ids, out_dir)``; ``source`` is anything
implementing ``dashboards.load.Source``. Importing this package loads neither matplotlib
nor MLflow.
"""
