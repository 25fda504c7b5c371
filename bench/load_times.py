"""Cold and warm load time of the whole SigmaHQ corpus, each in a fresh process.

Cold: empty cache directory (pySigma parse + lowering + passes, then the cache is written).
Warm: a new process that finds the cache. Figures are wall-clock seconds inside the child for
``import sigma_arrow`` + ``load_rules(...)``, the CPU seconds of that (helper processes included; the
better figure on a busy machine), and the wall-clock time of the whole child process.

    python bench/load_times.py [--workers N] [--runs 3] [RULE_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SIGMA = PROJECT.parent / "shared" / "sigma"
DEFAULT_DIRS = [SIGMA / "rules", SIGMA / "rules-emerging-threats", SIGMA / "rules-threat-hunting"]

CHILD = """
import json, resource, sys, time
start, cpu_start = time.perf_counter(), time.process_time()
import sigma_arrow
rules = sigma_arrow.load_rules(sys.argv[1:], workers={workers})
done = time.perf_counter()
helpers = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = time.process_time() - cpu_start + helpers.ru_utime + helpers.ru_stime
print(json.dumps({{"seconds": done - start, "cpu": cpu, "rules": len(rules), "errors": len(rules.errors),
                  "pysigma_imported": "sigma" in sys.modules}}))
"""


def run_child(dirs: list[str], cache_dir: str, workers: int) -> tuple[dict[str, object], float]:
    env = dict(os.environ, SIGMA_ARROW_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(workers=workers), *dirs],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1]), time.perf_counter() - started


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("dirs", nargs="*", default=[str(d) for d in DEFAULT_DIRS])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="parse processes (default: loader's)")
    args = parser.parse_args()
    worker_options = [args.workers] if args.workers else [1, 2]
    for workers in worker_options:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="sa-bench-cache-") as cache_dir:
                cold, cold_wall = run_child(args.dirs, cache_dir, workers)
                warm, warm_wall = run_child(args.dirs, cache_dir, workers)
            print(
                f"workers={workers} run={run + 1}: {cold['rules']} rules, {cold['errors']} not ok | "
                f"cold {cold['seconds']:.2f} s (cpu {cold['cpu']:.2f} s, process {cold_wall:.2f} s) | "
                f"warm {warm['seconds']:.2f} s (cpu {warm['cpu']:.2f} s, process {warm_wall:.2f} s, "
                f"pySigma imported: {warm['pysigma_imported']})"
            )


if __name__ == "__main__":
    main()
