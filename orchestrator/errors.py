"""The error every command turns into one line and exit status 2."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad user input: the CLI prints the message and exits 2, before anything is recorded."""


class TrackingAuthError(UsageError):
    """The tracking server refused the credentials (HTTP 401/403): a configuration error,
    exit 2, naming the variables that carry them (never their values)."""


class TrackingUnavailableError(RuntimeError):
    """The tracking server could not be reached (or kept failing) for longer than allowed;
    the message names it. The CLI prints it as one line and exits 1."""
