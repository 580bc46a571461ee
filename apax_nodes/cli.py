"""Command line of the workflow layer: ``apax-nodes report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from apax_core.errors import show_traceback
from apax_nodes.report import format_table


def report(rev: str | None) -> int:
    """Print the table of every loop Report stage of the repository in the working directory."""
    import zntrack

    dvc_yaml = Path("dvc.yaml")
    if not dvc_yaml.is_file():
        print("apax-nodes report: no dvc.yaml here; run it in a loop repository", file=sys.stderr)
        return 2
    names = [
        n for n in yaml.safe_load(dvc_yaml.read_text()).get("stages", {}) if n.endswith("Report")
    ]
    if not names:
        print(
            "apax-nodes report: no loop Report stage in dvc.yaml (see build_loop)", file=sys.stderr
        )
        return 2
    for name in names:
        try:
            rows = zntrack.from_rev(name, rev=rev).rows
        except Exception as err:  # noqa: BLE001 - not run yet, or no such revision
            if show_traceback():
                raise
            print(
                f"apax-nodes report: {name}: no results ({type(err).__name__}); `dvc repro` it",
                file=sys.stderr,
            )
            return 2
        print(f"{name}:\n{format_table(rows)}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="apax-nodes", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="one row per iteration of every loop in this repository")
    r.add_argument("--rev", help="a git revision (default: the workspace)")
    args = p.parse_args(argv)
    return report(args.rev)


if __name__ == "__main__":
    sys.exit(main())
