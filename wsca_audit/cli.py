"""The ``wsca-audit`` command: demo, report, card, log.

Exit codes (for CI pipelines):
  0  success (and no task has a verdict named by --fail-on)
  1  a task has a verdict named by --fail-on (or the demo's verdicts did not differ)
  2  bad command line (argparse), or a plugin sub-command that is not installed
  3  the library refused the input or could not reach MLflow (the message says why)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from .errors import AuditError
from .verdict import USES, VERDICTS

EXIT_FLAGGED = 1
EXIT_ERROR = 3
PLUGIN_GROUP = "wsca_audit.commands"
BUILTIN_COMMANDS = ("report", "card", "log")
# Plugins this distribution ships; named in the help (and explained) even when missing.
SHIPPED_PLUGINS = {
    "demo": "audit a pretrained MobileNetV2 on real brain MRI, with and without a shortcut",
}


def _fail_on(result, verdicts: list[str] | None) -> int:
    if not verdicts:
        return 0
    hit = {n: v for n, v in result.verdicts.items() if v in verdicts}
    if hit:
        print(
            f"--fail-on {','.join(verdicts)}: " + ", ".join(f"{n}={v}" for n, v in hit.items()),
            file=sys.stderr,
        )
        for name in hit:  # the sentence with the numbers, for the CI log
            reason = result.tasks[name].get("reason")
            if reason:
                print(f"  {name}: {reason}", file=sys.stderr)
        return EXIT_FLAGGED
    return 0


def _write(text: str) -> None:
    """Print to stdout; a reader that left (``| head``) is no error, and the exit status
    the command computed stands (a CI gate must not pass because a pipe closed)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # point stdout at /dev/null so that the interpreter's final flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _run_report(args: argparse.Namespace):
    """The report of ``--run-id`` at ``--artifact-path``, or the run's latest one; when
    the run holds several, say which was read and how to choose (on stderr)."""
    from .runs import load_run_report

    result, path, paths = load_run_report(
        args.run_id, tracking_uri=args.tracking_uri, artifact_path=args.artifact_path
    )
    if len(paths) > 1:
        listing = "\n".join(f"  {p}" for p in paths)
        print(
            f"run {args.run_id} holds {len(paths)} reports; read {path} (choose one with "
            f"--artifact-path):\n{listing}",
            file=sys.stderr,
        )
    return result


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import AuditResult

    if args.run_id:
        result = _run_report(args)
    elif args.dir:
        result = AuditResult.load(args.dir)
    else:
        raise AuditError("give a report folder (or report.json) or --run-id")
    code = _fail_on(result, args.fail_on)  # decided before any output can fail
    _write(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return code


def _cmd_card(args: argparse.Namespace) -> int:
    from .card import write_model_card
    from .report import AuditResult

    details: dict[str, str] = {}
    if args.run_id:
        from .runs import run_details

        result = _run_report(args)
        details = run_details(args.run_id, tracking_uri=args.tracking_uri)
    elif args.report:
        result = AuditResult.load(args.report)
    else:
        raise AuditError("give --run-id ID (an MLflow run) or --report DIR (a saved report)")
    about = [
        f"MLflow run `{details['run_name']}` in experiment `{details['experiment']}`."
        if details.get("run_name")
        else "",
        details.get("description", ""),
        f"Run parameters: {details['params']}." if details.get("params") else "",
    ]
    path = write_model_card(
        result,
        args.out,
        model_name=args.model_name or details.get("run_name") or "model",
        intended_use=args.intended_use,
        evaluation_data=args.evaluation_data,
        model_details=" ".join(a for a in about if a) or None,
        license=args.license,
        run_id=args.run_id,
    )
    code = _fail_on(result, args.fail_on)
    _write(f"model card: {path} (HTML: {path.with_suffix('.html')})")
    return code


def _cmd_log(args: argparse.Namespace) -> int:
    from .tracking import log_saved

    run_id = log_saved(
        args.dir,
        args.run_id,
        experiment_name=args.experiment,
        run_name=args.run_name,
        tracking_uri=args.tracking_uri,
    )
    _write(f"logged {args.dir} to MLflow run {run_id}")
    return 0


def _unavailable(sub, name: str, help: str, reason: str) -> None:
    """A stand-in sub-command that exits with status 2 and says why ``name`` is missing."""
    p = sub.add_parser(name, help=f"{help} (unavailable)", description=reason)
    p.set_defaults(func=lambda args: p.error(reason), accepts_any_arguments=True)


def _add_plugins(sub) -> None:
    """Add the sub-commands of the ``wsca_audit.commands`` entry points (name order).

    Each entry point is a callable ``register(subparsers)`` that adds its sub-parser and
    sets its ``func`` (``set_defaults(func=...)``), which returns the exit status. ``demo``
    is such a plugin (``wsca_audit.demo``, which the library never imports).

    Called after the built-in sub-commands are added, which win any clash of names. A
    plugin that fails to load, or a shipped one that is not installed, becomes a stand-in
    that explains the failure when run, so the other commands keep working.
    """
    seen = set(BUILTIN_COMMANDS)
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        if ep.name in seen:  # built-ins, and the first of duplicate plugins, win
            continue
        seen.add(ep.name)
        try:
            ep.load()(sub)
        except Exception as exc:
            if ep.name in sub.choices:  # it failed after adding its sub-parser
                continue
            _unavailable(
                sub,
                ep.name,
                SHIPPED_PLUGINS.get(ep.name, f"plugin {ep.value}"),
                f"the '{ep.name}' command ({ep.value}) could not be loaded: "
                f"{type(exc).__name__}: {exc}",
            )
    for name, help in SHIPPED_PLUGINS.items():
        if name not in seen:
            _unavailable(
                sub,
                name,
                help,
                f"the '{name}' command is not installed: no entry point '{name}' in group "
                f"'{PLUGIN_GROUP}' (reinstall wsca-audit, e.g. `pip install -e '.[demo]'`)",
            )


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    ap = argparse.ArgumentParser(
        prog="wsca-audit",
        description="Audit PyTorch classifiers for shortcut learning (Weight Space "
        "Correlation Analysis): does the model's head USE scanner, site, sex...?",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"wsca-audit {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fail_on = {
        "action": "append",
        "choices": VERDICTS,
        "metavar": "VERDICT",
        "help": "exit with status 1 when any task has this verdict (repeatable), e.g. "
        f"--fail-on {USES}",
    }
    uri = {"help": "MLflow tracking URI (default: MLFLOW_TRACKING_URI or MLflow's local store)"}
    artifact = {
        "help": "with --run-id: the run's report folder, e.g. wsca/validation-epoch3-step120 "
        "(default: wsca, else the run's latest report; several are listed)"
    }

    p = sub.add_parser(
        "report",
        help="print the summary of a saved report (folder, file or run)",
        description="Print a report's summary table (or its JSON).",
    )
    p.add_argument("dir", nargs="?", help="report folder or report.json")
    p.add_argument("--run-id", help="read the report from this MLflow run instead")
    p.add_argument("--artifact-path", **artifact)
    p.add_argument("--tracking-uri", **uri)
    p.add_argument("--json", action="store_true", help="print the full JSON report")
    p.add_argument("--fail-on", **fail_on)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "card",
        help="write a model card (Markdown + HTML) from a run or report",
        description="Write a model card after Mitchell et al. with Hugging Face "
        "model-index front matter and an HTML rendering.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="MLflow run holding a wsca report")
    src.add_argument("--report", help="saved report folder or report.json")
    p.add_argument("--out", default="MODEL_CARD.md", help="card path (default: MODEL_CARD.md)")
    p.add_argument(
        "--model-name", help="the model's name in the card (default: the run's name, else 'model')"
    )
    p.add_argument("--intended-use", help="one sentence on what the model is for")
    p.add_argument("--evaluation-data", help="one sentence on the evaluation data")
    p.add_argument("--license", help="licence id for the card's metadata, e.g. apache-2.0")
    p.add_argument("--artifact-path", **artifact)
    p.add_argument("--tracking-uri", **uri)
    p.add_argument("--fail-on", **fail_on)
    p.set_defaults(func=_cmd_card)

    p = sub.add_parser(
        "log",
        help="upload a saved report folder to MLflow (e.g. after an outage)",
        description="Upload a report folder written by result.save() or kept by "
        "log_to_mlflow when the server was unreachable. Without --run-id the "
        "run recorded in the folder (if any) is used, else a new run.",
    )
    p.add_argument("dir", help="report folder")
    p.add_argument("--run-id", help="log into this run (default: the one noted in the folder)")
    p.add_argument("--experiment", help="experiment name for a new run")
    p.add_argument("--run-name", help="name of a new run")
    p.add_argument("--tracking-uri", **uri)
    p.set_defaults(func=_cmd_log)
    _add_plugins(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wsca-audit`` console script.

    Examples
    --------
    >>> import contextlib, io
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     code = main(["report", "/nonexistent"])
    >>> code, err.getvalue().strip()
    (3, 'error: no report at /nonexistent')
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")  # what parse_args does
    try:
        return args.func(args)
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # output the command did not guard: its status is unknown, so never 0 (a CI gate
        # behind a pipe must not pass because the reader left)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: the output could not be written (the reader closed the pipe)",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
