"""Run every benchmark in turn (``make bench``); each records its own results/*.json.

    python benchmarks/run_all.py                 # all, in the order below
    python benchmarks/run_all.py simulate poco   # only these

The real-data benchmarks (poco, ttt) need ../shared/data (or their --data option) and take
about an hour each on a 2-core CPU; store writes 55 GB to a temporary folder; reliability
(random kills, damaged stores, bad inputs) takes about half an hour on one core; seed_findings
(the LatentEvolution findings, 20 presets x 2 seeds) a few hours; scaling only reads the results.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["simulate", "train_latent", "store", "poco", "ttt", "reliability", "fly_realism", "seed_findings", "scaling"]


def main() -> int:
    names = sys.argv[1:] or ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"== benchmarks/{name}.py", flush=True)
        if subprocess.call([sys.executable, str(HERE / f"{name}.py")]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
