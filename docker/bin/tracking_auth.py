"""MLflow's basic-auth, answering 503 rather than 401 while the user database is unreachable.

In MLflow 3.17.2, ``authenticate_request_basic_auth`` reads a lost database connection as
wrong credentials (``SqlAlchemyStore.authenticate_user`` returns False on any
MlflowException, and the store turns a connection error into one), so a PostgreSQL
restart answers some requests 401. A client gives up on a 401 instead of retrying, and
trials logging at that moment fail. Here a refusal is checked against the database once:
unreachable, the answer is 503 Service Unavailable, which clients retry; reachable again,
the credentials are checked anew.

docker/bin/mlflow-server names ``authenticate_request`` as the server's
``authorization_function``.
"""

from __future__ import annotations

from flask import Response, request
from mlflow.exceptions import MlflowException
from mlflow.server import auth
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

RETRY_AFTER_S = 5


def authenticate_request():
    """What ``authenticate_request_basic_auth`` answers, except 503 for a database outage."""
    answer = auth.authenticate_request_basic_auth()
    refused = isinstance(answer, Response) and answer.status_code == 401
    if not refused or request.authorization is None:
        return answer
    if database_reachable():
        # It may have come back since the first check: answer from the database as it is.
        return auth.authenticate_request_basic_auth()
    return Response(
        "the tracking server cannot reach its database; retry later",
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def database_reachable() -> bool:
    try:
        with auth.store.ManagedSessionMaker() as session:
            session.execute(text("SELECT 1"))
    except (MlflowException, SQLAlchemyError):
        return False
    return True
