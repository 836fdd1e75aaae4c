"""hf-transfer: recipe-driven transfer learning on the Hugging Face stack.

The command line. Each command imports what it runs inside its function, so that `--help` and a
recipe error stay fast (no torch, transformers or datasets at start-up).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from hf_transfer import __version__
from hf_transfer.console import LOG_FORMAT
from hf_transfer.arguments import count_type, port_type, ratio_type, tolerance_type
from hf_transfer.errors import HfTransferError, RecipeError


def cmd_finetune(args: argparse.Namespace) -> int:
    from hf_transfer.validate import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from hf_transfer.runs import run

    result = run(recipe, overwrite=args.overwrite, resume=args.resume)
    if result.trainer is None or result.trainer.is_world_process_zero():  # None: --resume of finished folds
        summary = {k: result.metrics[k] for k in ("validation", "test") if k in result.metrics}
        print(json.dumps({"output_dir": str(result.output_dir), **summary}, indent=2))
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    """`accelerate launch` of `hf-transfer finetune`, with the recipe checked first and the launcher's
    traceback replaced by the training process's own one-line error."""
    import subprocess

    from hf_transfer.validate import load_recipe

    load_recipe(args.recipe, args.overrides)  # a recipe error: one line, exit 2, before any process starts
    from accelerate.commands.launch import launch_command, launch_command_parser

    flags = [f for f, on in (("--overwrite", args.overwrite), ("--resume", args.resume)) if on]
    launcher = ["--config_file", args.config_file] if args.config_file else []
    ns = launch_command_parser().parse_args(
        [*launcher, *args.accelerate_args, "--module", "hf_transfer", "finetune", args.recipe, *args.overrides, *flags]
    )
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun logs each failed process; its exit code is in our own line (or the process printed its error)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        launch_command(ns)
    except (subprocess.CalledProcessError, ChildFailedError) as err:  # one process / torchrun's processes
        # torchrun's: the first process to fail (the others were stopped after it)
        code = err.returncode if isinstance(err, subprocess.CalledProcessError) else err.get_first_failure()[1].exitcode
        if code == 2:  # the training process printed its one-line error already
            return 2
        raise HfTransferError(f"launch: a training process ended with exit code {code}") from None
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from hf_transfer.validate import load_recipe

    # section.key=value arguments (not files) are overrides, applied to each recipe as finetune applies them
    overrides = [a for a in args.recipes if "=" in a and not Path(a).exists()]
    recipes = [a for a in args.recipes if a not in overrides]
    if not recipes:
        raise RecipeError("validate: no recipe file given, only overrides")
    for path in recipes:
        load_recipe(path, overrides)
        print(f"{path}: ok" + (f" (with {len(overrides)} override{'s' * (len(overrides) > 1)})" if overrides else ""))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from hf_transfer.validate import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from hf_transfer.runs.rank import rank, table

    report = rank(recipe, candidates=args.candidates, sample=args.sample, out=args.output_dir)
    print(table(report))
    print(f"best by LogME: {report['best']}; written: {report['output_dir']}/rank.json, rank.md")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from hf_transfer.validate import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from hf_transfer.runs.tune import tune
    from hf_transfer.runs.tune_report import against_recipe, table

    report = tune(recipe, n_trials=args.n_trials, timeout=args.timeout, out=args.output_dir,
                  train_best=args.train_best or None)
    print(table(report))
    print(f"best: trial {report['best']['number']} ({report['metric']} {report['best']['value']:.4f}); "
          f"its recipe: {report['best_recipe']}.{against_recipe(report)}")
    if "best_run" in report:
        print(json.dumps(report["best_run"], indent=2))
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    from hf_transfer.assets import prepare_assets

    for name, path in prepare_assets(args.dir, force=args.force, names=args.names).items():
        print(f"{name}: {path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from hf_transfer.outputs.hub import push

    urls = push(args.output_dir, args.repo_id, private=not args.public, revision=args.revision,
                base_model=args.base_model, merged_repo_id=args.merged_repo_id)
    for url in urls:
        print(f"pushed: {url}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from hf_transfer.outputs.verify import verify

    print(verify(args.output_dir, device=args.device, tolerance=args.tolerance).summary())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hf_transfer.outputs.predict import format_results, predict, shown_input

    items, results = predict(args.output_dir, args.inputs, top_k=args.top_k, batch_size=args.batch_size,
                             device=args.device, text_column=args.text_column)
    if args.json:
        print(json.dumps([{"input": shown_input(i), "predictions": r}
                          for i, r in zip(items, results)], indent=2))
    else:
        print("\n".join(format_results(items, results)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hf_transfer.outputs.serve import serve

    serve(args.output_dir, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
          batch_timeout_ms=args.batch_timeout_ms, device=args.device)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from hf_transfer.shipped import listing

    print("\n".join(listing()))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from hf_transfer.shipped import copy

    print(f"wrote {copy(args.name, args.dest, force=args.force)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hf_transfer.outputs.evaluate import evaluate, format_results

    results = evaluate(args.output_dir, args.data, batch_size=args.batch_size, device=args.device)
    print(json.dumps(results, indent=2) if args.json else "\n".join(format_results(results)))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from hf_transfer.outputs.merge import merge

    print(f"merged: {merge(args.output_dir, args.dest, force=args.force)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hf_transfer.outputs.export import export

    print(export(args.output_dir, args.dest, quantize=args.quantize, overwrite=args.overwrite,
                 tolerance=args.tolerance, max_drop=args.max_drop, outlier_ratio=args.outlier_ratio).summary())
    return 0


def _add_folder_flags(p: argparse.ArgumentParser) -> None:
    """--overwrite or --resume (not both: one replaces the run, the other continues it)."""
    flags = p.add_mutually_exclusive_group()
    flags.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    flags.add_argument("--resume", action="store_true", help="continue from the last checkpoint")


def _add_folder_commands(sub) -> None:
    p = sub.add_parser("push", help="upload a finished run to the Hugging Face Hub")
    p.add_argument("output_dir")
    p.add_argument("repo_id", help="e.g. your-name/minilm-drugreview")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--revision", help="branch to push to (created if missing)")
    p.add_argument("--base-model", help="Hub id of the base model when the recipe names a local folder")
    p.add_argument("--merged-repo-id", help="LoRA with merge: push merged/ to this repo instead")

    p = sub.add_parser("verify", help="reload a run as a Hub user would and re-check its metrics")
    p.add_argument("output_dir")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when present, as in training)")
    p.add_argument("--tolerance", type=tolerance_type, default=0.0, help="allowed metric difference (default 0)")

    p = sub.add_parser("predict", help="labels and scores from a saved run")
    p.add_argument("output_dir")
    p.add_argument("inputs", nargs="+", help="texts, files of texts (one a line; - for stdin), tables (csv, tsv, json, "
                                             "jsonl, parquet), or image/audio paths")
    p.add_argument("--text-column", help="a table's column to classify (default: the recipe's text column)")
    p.add_argument("--top-k", type=count_type, default=1, help="labels shown per input (default 1)")
    p.add_argument("--batch-size", type=count_type, default=8)
    p.add_argument("--device")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("serve", help="an HTTP inference server for a saved run (needs the `serve` extra)")
    p.add_argument("output_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_type, default=8000, help="default 8000; 0 picks a free port")
    p.add_argument("--max-batch-size", type=count_type, default=16, help="inputs gathered into one model call (default 16)")
    p.add_argument("--batch-timeout-ms", type=tolerance_type, default=10.0,
                   help="how long the first request of a batch waits for more (default 10)")
    p.add_argument("--device")

    p = sub.add_parser("evaluate", help="metrics of a finished run on new labelled data")
    p.add_argument("output_dir")
    p.add_argument("data", nargs="+", help="files (csv, tsv, json, jsonl, parquet, conll) or image / audio folders, "
                                           "with the recipe's columns; each is scored on its own")
    p.add_argument("--batch-size", type=count_type, help="default: the recipe's per_device_eval_batch_size")
    p.add_argument("--device")
    p.add_argument("--json", action="store_true", help="print JSON, per-class scores and confusion matrices included")

    p = sub.add_parser("merge", help="merge a run's PEFT adapter into a plain model folder")
    p.add_argument("output_dir")
    p.add_argument("dest", nargs="?", help="where to write the merged model (default: OUTPUT_DIR/merged)")
    p.add_argument("--force", action="store_true", help="replace an existing DEST")

    p = sub.add_parser("export", help="write a run's model as an ONNX folder (needs the `onnx` extra)")
    p.add_argument("output_dir")
    p.add_argument("dest", nargs="?", help="where to write it (default: OUTPUT_DIR/onnx)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the only format today: onnx")
    p.add_argument("--quantize", choices=["int8"], help="also write model_quantized.onnx (int8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    p.add_argument("--tolerance", type=tolerance_type, default=1e-4,
                   help="largest allowed |ONNX - PyTorch| logit difference (default 1e-4)")
    p.add_argument("--max-drop", type=tolerance_type,
                   help="refuse an int8 model that loses more points of the headline test metric than this "
                        "(default: write it; a loss over 1 point is logged)")
    p.add_argument("--outlier-ratio", type=ratio_type,
                   help="dynamic int8: multiply in fp32 the input channels whose peak on training inputs exceeds "
                        "this many times the 99th percentile of their tensor's channels (default 3; inf: none)")


def _add_shipped_commands(sub) -> None:
    sub.add_parser("recipes", help="list the recipes and Accelerate configs that come with hf-transfer")
    p = sub.add_parser("init", help="copy a shipped recipe or Accelerate config to edit")
    p.add_argument("name", help="a name `hf-transfer recipes` lists, e.g. minilm_drugreview")
    p.add_argument("dest", nargs="?", help="file or folder to copy to (default: the current folder)")
    p.add_argument("--force", action="store_true", help="replace an existing file")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-transfer", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"hf-transfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="fine-tune a model from a YAML recipe")
    p.add_argument("recipe", help="path to a recipe YAML file")
    p.add_argument("overrides", nargs="*", default=[], help="recipe overrides: section.key=value")
    _add_folder_flags(p)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    p = sub.add_parser("launch", help="accelerate launch of finetune: recipe checked first, one-line errors")
    p.add_argument("recipe", help="path to a recipe YAML file")
    p.add_argument("overrides", nargs="*", default=[], help="recipe overrides: section.key=value")
    p.add_argument("--config-file", "--config_file", dest="config_file",
                   help="Accelerate config (e.g. accelerate_configs/cpu_2proc.yaml)")
    p.add_argument("--accelerate-args", dest="accelerate_args", nargs=argparse.REMAINDER, default=[],
                   help="further `accelerate launch` options, e.g. --num_processes 2 (last on the line)")
    _add_folder_flags(p)

    p = sub.add_parser("validate", help="check recipes without loading anything")
    p.add_argument("recipes", nargs="+", metavar="recipe [overrides]",
                   help="recipe YAML files, and section.key=value overrides applied to each")

    p = sub.add_parser("rank", help="score candidate backbones on frozen features (LogME, LEEP, NCE, probe)")
    p.add_argument("recipe", help="path to a recipe YAML file")
    p.add_argument("overrides", nargs="*", default=[], help="recipe overrides: section.key=value")
    p.add_argument("--candidates", nargs="+", help="Hub ids or model folders (default: the recipe's rank.candidates)")
    p.add_argument("--sample", type=count_type, help="training examples scored (default: rank.sample, 1000)")
    p.add_argument("--output-dir", help="where rank.json and rank.md go (default: training.output_dir-rank)")

    p = sub.add_parser("tune", help="search the recipe's tune.space with Optuna or Ray Tune; write best.yaml")
    p.add_argument("recipe", help="path to a recipe YAML file with a tune section")
    p.add_argument("overrides", nargs="*", default=[], help="recipe overrides: section.key=value")
    p.add_argument("--n-trials", type=count_type, help="default: tune.n_trials")
    p.add_argument("--timeout", type=tolerance_type, help="time budget in seconds (default: tune.timeout)")
    p.add_argument("--output-dir", help="default: tune.output_dir, else training.output_dir-tune")
    p.add_argument("--train-best", action="store_true", help="train best.yaml after the search")

    p = sub.add_parser("assets", help="prepare the offline embedded default (model + data)")
    p.add_argument("--dir", default="assets", help="where to write the assets (default: assets/)")
    p.add_argument("--force", action="store_true", help="rebuild assets that already exist")
    p.add_argument("names", nargs="*", help="only these assets (default: all)")
    _add_folder_commands(sub)
    _add_shipped_commands(sub)
    return parser


# command name -> function; tests check it matches the parser's sub-commands.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "finetune": cmd_finetune,
    "launch": cmd_launch,
    "validate": cmd_validate,
    "rank": cmd_rank,
    "tune": cmd_tune,
    "assets": cmd_assets,
    "push": cmd_push,
    "verify": cmd_verify,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "evaluate": cmd_evaluate,
    "merge": cmd_merge,
    "export": cmd_export,
    "recipes": cmd_recipes,
    "init": cmd_init,
}


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line's arguments; positionals after a flag count as they would before it."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    takes_overrides = hasattr(args, "overrides")  # finetune, launch, rank, tune
    if extra and takes_overrides and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # overrides after a flag (`... --resume training.seed=1`) are overrides too
    elif len(extra) == 1 and getattr(args, "dest", False) is None and not extra[0].startswith("-"):
        # `export OUT --format onnx DEST`: argparse fills an optional positional only before a flag
        args.dest = extra[0]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from hf_transfer.distributed import end_process, log_level, report_crashes

    logging.basicConfig(level=log_level(), format=LOG_FORMAT)
    report_crashes()
    try:
        return end_process(COMMANDS[args.command](args))
    except HfTransferError as err:
        if args.debug:
            raise
        print(f"hf-transfer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-transfer: interrupted", file=sys.stderr)
        return 130
