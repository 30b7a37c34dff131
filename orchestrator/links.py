"""Links into the MLflow UI that land on the results.

The UI's front page is MLflow's GenAI welcome and an experiment's default view nests every
attempt under its sweep's collapsed parent run, with no charts. A sweep's link therefore
opens the model-training view of its experiment filtered to the sweep's attempt runs, in
the chart view. Sorting by run name (any order but the default start time) makes the UI
list the filtered runs flat instead of under their parent (checked on MLflow 3.17.2).

The base is the tracking server a person can open: $MLFLOW_TRACKING_URI when the records
live on a shared server, else `rigl ui` on 127.0.0.1 (the sweep's own private server is
gone once the command ends).
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlencode

from orchestrator import records

UI_PORT = 5000


def browse_base(port: int = UI_PORT) -> str:
    """The MLflow UI a person opens over this project's records."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://127.0.0.1:{port}"


def sweep_runs_url(experiment_id: str, sweep_id: str, base: str | None = None) -> str:
    """The sweep's attempt runs, flat, in the chart view of the model-training UI."""
    search = f"tags.`{records.SWEEP_ID}` = '{sweep_id}' and tags.`{records.KIND}` = 'attempt'"
    query = urlencode(
        {
            "workflowType": "machine_learning",
            "searchFilter": search,
            "orderByKey": "tags.`mlflow.runName`",
            "orderByAsc": "true",
            "compareRunsMode": "CHART",
        },
        quote_via=quote,
    )
    return f"{base or browse_base()}/#/experiments/{experiment_id}/runs?{query}"


def run_url(experiment_id: str, run_id: str, base: str | None = None) -> str:
    """One run's page in the MLflow UI."""
    return f"{base or browse_base()}/#/experiments/{experiment_id}/runs/{run_id}"
