"""`make bench`: every benchmark, each in its own process, then one summary (bench/results/SUMMARY.md).

Ratios are measured side by side within one run; the machine is shared and noisy, so every figure is
a median of repeated measurements and the raw numbers are kept in bench/results/<name>.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["push_bench.py", "agent_bench.py", "quantize_bench.py", "real_models_bench.py", "rerun_bench.py",
           "profile_bench.py", "lab_bench.py", "analyze_bench.py", "calib_bench.py"]


def main() -> int:
    failed = []
    for s in SCRIPTS:
        if not (HERE / s).exists():
            print(f"== {s}: missing, skipped", flush=True)
            continue
        print(f"== {s}", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, str(HERE / s)], cwd=HERE)
        print(f"== {s}: exit {rc} in {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(s)
    lines = ["# make bench results", ""]
    for f in sorted((HERE / "results").glob("*.json")):
        d = json.loads(f.read_text())
        lines.append(f"## {d.get('bench', f.stem)} ({d.get('when', '')})")
        lines.append("```")
        lines.append(json.dumps({k: v for k, v in d.items() if not isinstance(v, list) or len(v) <= 12}, indent=1)[:6000])
        lines.append("```")
    (HERE / "results" / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print(f"summary: {HERE / 'results' / 'SUMMARY.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
