"""Orchestration: the `rigl` command, Hydra composition, Ray execution, the MLflow ledger.

The only package that imports ray, mlflow or hydra (each in one module).
"""
