"""Command line: ``apax-core train | eval | validate | template``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from apax_core.config import ConfigError, TrainConfig, load_config

MINIMAL_TRAIN = """\
# apax-core training config: the minimal form. Every other option has a tuned default;
# `apax-core template train --full` lists them all.
directory: models/my_model        # the model directory (written, and resumed from)
n_epochs: 40
data:
  train_file: train.extxyz        # any ASE-readable file or H5MD
  val_file: val.extxyz            # or leave out and set val_fraction: 0.1
  batch_size: 8
model:
  kind: gmnn
  r_max: 5.0                      # cutoff (A), also the neighbour-list cutoff
"""


def _cmd_validate(args) -> int:
    try:
        config = load_config(args.config, TrainConfig)
    except ConfigError as err:
        print(err, file=sys.stderr)
        print("Configuration invalid.", file=sys.stderr)
        return 1
    missing = [
        f"data.{name}: file not found: {path}"
        for name in ("train_file", "val_file")
        if (path := getattr(config.data, name)) is not None and not Path(path).exists()
    ]
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return 1
    print(f"{args.config}: valid")
    return 0


def _cmd_template(args) -> int:
    if args.full:
        example = TrainConfig(
            directory="models/my_model",
            n_epochs=40,
            data={"train_file": "train.extxyz", "val_file": "val.extxyz"},
        )
        print(yaml.safe_dump(example.model_dump(mode="json"), sort_keys=False), end="")
    else:
        print(MINIMAL_TRAIN, end="")
    return 0


def _cmd_train(args) -> int:
    from apax_core.train.trainer import train

    try:
        config = load_config(args.config, TrainConfig)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    directory = train(config)
    print(json.dumps(json.loads((directory / "metrics.json").read_text()), indent=2))
    return 0


def _cmd_eval(args) -> int:
    from apax_core.data import from_atoms, read_frames
    from apax_core.evaluate import evaluate
    from apax_core.files import atomic_write
    from apax_core.model_dir import load_model

    model = load_model(args.model)
    structures = [from_atoms(a) for a in read_frames(args.data)]
    metrics = evaluate(model, structures, batch_size=args.batch_size, progress=True)
    units = {"energy": "meV/atom", "forces": "meV/A", "stress": "meV/A^3"}
    print(f"{'quantity':<10}{'MAE':>12}{'RMSE':>12}  unit")
    for q, unit in units.items():
        if f"{q}_mae" in metrics:
            print(f"{q:<10}{metrics[q + '_mae']:>12.3f}{metrics[q + '_rmse']:>12.3f}  {unit}")
    out = Path(args.json or Path(args.model) / f"eval_{Path(args.data).stem}.json")
    atomic_write(out, json.dumps(metrics, indent=2))
    print(f"wrote {out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apax-core", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a config file; print every error")
    v.add_argument("kind", choices=["train"])
    v.add_argument("config")
    v.set_defaults(fn=_cmd_validate)

    t = sub.add_parser("template", help="print a config template")
    t.add_argument("kind", choices=["train"])
    t.add_argument("--full", action="store_true", help="every option with its default")
    t.set_defaults(fn=_cmd_template)

    tr = sub.add_parser("train", help="train (or resume) a model")
    tr.add_argument("config")
    tr.set_defaults(fn=_cmd_train)

    e = sub.add_parser("eval", help="errors of a model on a labelled file")
    e.add_argument("model", help="model directory")
    e.add_argument("data", help="labelled structures")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--json", help="where to write the metrics (default: MODEL/eval_DATA.json)")
    e.set_defaults(fn=_cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
