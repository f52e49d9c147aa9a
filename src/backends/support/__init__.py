"""What several backends share, apart from the backends themselves: the engine cache and its keys
(`engine_cache`), `torch.export` at the job's input (`exporting`), Inductor's persistent caches
(`inductor`) and Dynamo's precompiled modules (`precompile`). Runs in the measuring child; imports
`src.shared` and the standard library, never a backend."""
