"""`python -m src.bench` with start-up shortcuts turned off, to measure what each saves on a whole sweep
(`benchmarks/sweep_time.py --sweeps cold,no-compose,no-fast-exit`):

    python benchmarks/without.py compose,fast-exit -- +experiment=study gpu=0

- `compose`: a basic sweep's jobs are not composed and checked in forks ahead of time (Hydra's internal
  basic sweeper expanded by hand, Hydra's `load_sweep_config` answered from those compositions, each job's
  checked `Job` kept for it): Hydra composes each job itself and each job checks its own config.
- `fast-exit`: the process ends through the interpreter's own teardown (`sys.exit`), not through
  `atexit._run_exitfuncs` and `os._exit`.
"""

from __future__ import annotations

import signal
import sys

SHORTCUTS = ("compose", "fast-exit")


def main() -> None:
    if len(sys.argv) < 2 or "--" not in sys.argv:
        sys.exit(f"usage: python benchmarks/without.py {','.join(SHORTCUTS)} -- OVERRIDES...")
    off = sys.argv[1].split(",")
    unknown = sorted(set(off) - set(SHORTCUTS))
    if unknown:
        sys.exit(f"unknown shortcut(s) {', '.join(unknown)}; allowed: {', '.join(SHORTCUTS)}")
    from src import bench
    from src.parent import config, sweep

    if "compose" in off:
        sweep.BASIC_SWEEPER = "(turned off)"  # no sweeper is this one: jobs are composed and checked late
    sys.argv = config.shorthands([sys.argv[0], *sys.argv[sys.argv.index("--") + 1 :]])
    signal.signal(signal.SIGTERM, bench._terminated)
    code = bench.run()
    if "fast-exit" in off:
        sys.exit(code)
    bench.exit_now(code)


if __name__ == "__main__":
    main()
