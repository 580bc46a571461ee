"""The default loop's `dvc repro` from a fresh clone, two revisions back to back.

    python bench/default_loop.py BASE [HEAD]

Each revision is cloned from this repository into a temporary directory and reproduced with
this interpreter's environment first on PATH, the clone first on PYTHONPATH and an empty
compilation cache of its own (a fresh machine's). Prints wall time, the MD stages' overflow
reallocations and the Report's final metrics per revision, and head/base; writes
bench/results/default_loop.json.
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

from common import ROOT, table, write_result


def reproduce(rev: str, scratch: Path) -> dict:
    clone = scratch / rev
    subprocess.run(["git", "clone", "-q", str(ROOT.parent), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
    env = os.environ | {
        "APAX_COMPILATION_CACHE": str(scratch / f"xla-{rev}"),
        "PYTHONPATH": str(clone),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    t0 = time.perf_counter()
    out = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    metrics = (
        json.loads((clone / "nodes/Report/metrics.json").read_text()) if not out.returncode else {}
    )
    return {
        "rev": rev,
        "rc": out.returncode,
        "wall_s": wall,
        "overflows": (out.stdout + out.stderr).count("neighbour list overflow"),
        "test F MAE": metrics.get("test_forces_mae"),
        "done": metrics.get("done"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("head", nargs="?", default="HEAD")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [reproduce(rev, Path(tmp)) for rev in (args.base, args.head)]
    print(table(rows, ["rev", "rc", "wall_s", "overflows", "test F MAE", "done"]))
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    print(f"head/base wall time: {ratio:.3f}")
    write_result("default_loop", {"rows": rows, "head_over_base": ratio})


if __name__ == "__main__":
    main()
