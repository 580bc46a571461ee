"""What every experiment script shares: its command line and where its JSON and PNG go."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from apax_core.files import atomic_write

OUT = Path(__file__).resolve().parents[1] / "results" / "experiments"
"""The published results; ``--quick`` runs go to its ``quick/`` folder (not committed)."""


def parser(doc: str, quick: str) -> argparse.ArgumentParser:
    """The script's parser with ``--quick`` (described by ``quick``) and ``--out``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"a smoke run of minutes: {quick}")
    p.add_argument("--out", type=Path, help=f"output folder (default {OUT}, quick: its quick/)")
    return p


def out_dir(args: argparse.Namespace) -> Path:
    out = args.out or (OUT / "quick" if args.quick else OUT)
    out.mkdir(parents=True, exist_ok=True)
    return out


def settings(args: argparse.Namespace) -> dict:
    """The run's options, for its JSON (not where it wrote them)."""
    return {k: v for k, v in vars(args).items() if k != "out"}


def write_json(args: argparse.Namespace, name: str, payload: dict) -> Path:
    """``name``.json in the run's output folder; returns the path stem for the figure."""
    stem = out_dir(args) / name
    atomic_write(stem.with_suffix(".json"), json.dumps(payload, indent=2, default=float))
    return stem
