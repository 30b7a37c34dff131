"""Reads the ledger into pandas and builds comparison figures."""
