"""Runs in the Hydra process (`python -m src.bench`): config validation, the sweep's parent run, one job's
MLflow run, launching and watching the measuring child, the device lock, idle power and the telemetry
trace. Imports `src.shared`, never `src.child`."""
