"""MLflow: the private local server, the retry policy, the ledger's records and the
trainer's tracker, one small module each. The only package that imports mlflow
(an import-linter contract keeps it so); ``rest`` and ``runs`` import none of it.

    server   LocalStore, tracking_server(): the private `mlflow server` on 127.0.0.1
    retry    Retry, TrackingUnavailableError: one bounded retry policy for every call
    ledger   MlflowLedger: sweeps, trials and attempts as MLflow runs
    rest     RestReader: the ledger's reads over MLflow's REST API, without MLflow
             (`rigl status`, dry runs, dashboards)
    runs     MLflow runs as the ledger's records, for both readers
    tracker  MlflowTracker: trainers.tracking.Tracker over one attempt run
"""
