"""Command line of the workflow layer: ``apax-nodes report`` and ``apax-nodes grow``."""

from __future__ import annotations

import argparse
import subprocess
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
        why = zntrack.from_rev(name, rev=rev).verdict()
        print(f"{name}:\n{format_table(rows)}" + (f"\n{why}" if why else "") + "\n")
    return 0


def grow_command(script: Path, start: int, report_name: str) -> int:
    """Append iterations with ``script --iterations N`` and ``dvc repro`` until the loop's
    Report says done or its ``until.max_iterations`` is reached."""
    from apax_nodes.grow import grow, script_builder

    if not script.is_file():
        print(f"apax-nodes grow: no script {script}", file=sys.stderr)
        return 2
    try:
        n, why = grow(script_builder(script), start=start, report=report_name)
    except subprocess.CalledProcessError as err:
        print(
            f"apax-nodes grow: {' '.join(err.cmd)} failed (exit {err.returncode})", file=sys.stderr
        )
        return err.returncode
    print(f"apax-nodes grow: stopped after {n} iterations: {why}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="apax-nodes", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="one row per iteration of every loop in this repository")
    r.add_argument("--rev", help="a git revision (default: the workspace)")
    g = sub.add_parser(
        "grow",
        help="append iterations and dvc repro until the loop is done (build_loop(until=...))",
    )
    g.add_argument("script", type=Path, help="builds the graph; takes --iterations N")
    g.add_argument("--start", type=int, default=1, help="iterations of the first build")
    g.add_argument("--report", default="Report", help="the loop's Report stage")
    args = p.parse_args(argv)
    if args.command == "grow":
        return grow_command(args.script, args.start, args.report)
    return report(args.rev)


if __name__ == "__main__":
    sys.exit(main())
