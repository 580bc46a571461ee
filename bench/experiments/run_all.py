"""The whole set of experiments, then their report, in one timed command.

    python bench/experiments/run_all.py [--quick] [--out DIR]

Runs every script as ``__main__`` with its command line (in this process, so the imports and
compiled programs are shared), then writes the report: ``docs/results.md`` for the full set,
``results.md`` in the output folder otherwise.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

from experiment import out_dir, parser
from report import DOC, write_report

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "selection_efficacy",
    "selection_diagnostics",
    "continuous_learning",
    "udd",
    "active_vs_passive",
)


def main() -> None:
    args = parser(__doc__, "each script's --quick").parse_args()
    out, start = out_dir(args), time.perf_counter()
    for name in SCRIPTS:
        script = str(HERE / f"{name}.py")
        sys.argv = [script, "--out", str(out)] + ["--quick"] * args.quick
        runpy.run_path(script, run_name="__main__")
    print(f"the set: {(time.perf_counter() - start) / 60:.1f} min")
    full = not args.quick and args.out is None
    write_report(out, DOC if full else out / "results.md")


if __name__ == "__main__":
    main()
