"""Runs in the measuring child (`python -m src.child.worker`), one fresh process per job: build and place the
model, prepare the backend, time it, read the energy counter, check parity, export the artifact. Imports
`src.shared`, `src.models` and `src.backends`, never `src.parent`; never talks to MLflow."""
