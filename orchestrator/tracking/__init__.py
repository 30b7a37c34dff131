"""MLflow: the private local server, the retry policy, the ledger's records and the
trainer's tracker, one small module each. The only package that imports mlflow
(an import-linter contract keeps it so).

    server   LocalStore, tracking_server(): the private `mlflow server` on 127.0.0.1
    retry    Retry, TrackingUnavailableError: one bounded retry policy for every call
    ledger   MlflowLedger: sweeps, trials and attempts as MLflow runs
    tracker  MlflowTracker: trainers.tracking.Tracker over one attempt run
"""
