"""What both processes import: the job spec and its config sections, the result types, the progress-file
protocol between them, job statuses, the registries, and shared infrastructure (file locks, NVML, the
environment's versions). Nothing here imports from `src.parent` or `src.child`."""
