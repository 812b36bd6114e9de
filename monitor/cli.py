"""The ``driftline`` command line: one table of subcommands, implementations imported lazily.

Each subcommand is a row of :data:`COMMANDS`: its words, the module and function that run
it, and a function that declares its arguments. The implementation is imported only when
its command runs, so ``driftline check-config`` never pays for Kafka, numba or evidently.
An implementation is ``def main(args: argparse.Namespace) -> int`` (an exit code);
``args.command`` holds the command words (``"audit verify"``) for modules serving several.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad invocation or bad configuration


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]  # ("reference", "build")
    module: str  # imported when the command runs
    function: str  # called with the parsed args; returns the exit code
    help: str
    setup: Callable[[argparse.ArgumentParser], None]


def _config_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=None if required else os.environ.get("DRIFTLINE_CONFIG", "config.toml"),
        required=required,
        metavar="PATH",
        help="configuration file (default: $DRIFTLINE_CONFIG or ./config.toml)",
    )


def _setup_check_config(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument(
        "--format",
        choices=("toml", "json"),
        default="toml",
        help="how to print the resolved config (default: toml)",
    )


def _setup_run(p: argparse.ArgumentParser) -> None:
    _config_arg(p)


def _setup_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="PATH",
        help="configuration file (default: the built-in demo configuration)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic stream")
    p.add_argument("--state-dir", default=None, help="keep state here (default: a temp dir)")
    p.add_argument("--http-port", type=int, default=None, help="HTTP port (default: 9108)")


def _setup_replay(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument(
        "--predictions", required=True, metavar="FILE", help="prediction events (JSON lines)"
    )
    p.add_argument("--labels", default=None, metavar="FILE", help="label events (JSON lines)")
    p.add_argument(
        "--out", required=True, metavar="FILE", help="evaluations and alerts (JSON lines)"
    )


def _setup_reference_build(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--model", required=True, help="the [[models]] name to build the reference for")
    p.add_argument(
        "--data", required=True, metavar="PATH", help="reference data (parquet, CSV or JSON lines)"
    )
    p.add_argument("--out", required=True, metavar="PATH", help="reference profile JSON to write")


def _setup_card(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("model", help="the [[models]] name")
    p.add_argument("--since", default=None, help="ISO 8601 date or date-time (default: 30 days before --until)")
    p.add_argument("--until", default=None, help="ISO 8601 date or date-time, exclusive (default: now)")
    p.add_argument("--static", default=None, metavar="FILE", help="TOML file of the static fields ([card])")
    p.add_argument("--out", default=None, metavar="DIR", help="directory of the cards (default: [cards] dir)")
    p.add_argument(
        "--evaluations",
        default=None,
        metavar="PATH",
        help="`driftline replay` output or a state dir (default: the config's state.dir, or with "
        'state.backend = "kafka" its evaluations topic)',
    )
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT[,...]",
        help="broker of the Kafka backend's topics (default: the config's kafka.bootstrap_servers)",
    )


def _audit_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--path", default=None, help="audit log file (JSON lines)")
    src.add_argument(
        "--config",
        "-c",
        default=None,
        help="config file; the log is its audit.topic when set, else its audit.path",
    )
    p.add_argument("--topic", default=None, help="Kafka audit topic (instead of a file)")
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT[,...]",
        help="broker of --topic (default: the config's kafka.bootstrap_servers)",
    )


def _setup_audit_verify(p: argparse.ArgumentParser) -> None:
    _audit_source(p)
    p.add_argument(
        "--expect-head",
        action="append",
        default=None,
        help="SEQ:HASH the log must still contain; for a topic CHAIN=SEQ:HASH, repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _setup_audit_export(p: argparse.ArgumentParser) -> None:
    _audit_source(p)
    p.add_argument("--model", default=None, help="model whose evidence to export (required without --bundle)")
    p.add_argument(
        "--bundle", default=None, metavar="DIR",
        help="write an evidence bundle for the period (EU AI Act Art. 72 and Art. 12 headings) into DIR",
    )
    p.add_argument("--since", default=None, help="ISO 8601 date or date-time (UTC if no zone)")
    p.add_argument("--until", default=None, help="ISO 8601 date or date-time, exclusive")
    p.add_argument(
        "-o", "--output", "--out", dest="output", default="-", help="file (default: stdout)"
    )


def _setup_audit_redact(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--path", default=None, help="audit log file (JSON lines)")
    src.add_argument("--config", "-c", default=None, help="config file: its audit.path and payload_retention_days")
    p.add_argument("--days", type=float, default=None, help="payload retention (default: the config's)")


def _api_args(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--url", default=None, help="API base URL (default: $DRIFTLINE_URL or [http])")
    p.add_argument(
        "--token-file", default=None, help="API token file (default: $DRIFTLINE_API_TOKEN)"
    )
    p.add_argument("--json", action="store_true", help="print the raw JSON response")


def _decision_args(
    p: argparse.ArgumentParser, reason_help: str = "why (kept in the audit log)"
) -> None:
    p.add_argument("--by", default=os.environ.get("USER", ""), help="who decides (default: $USER)")
    p.add_argument("--reason", default="", help=reason_help)


def _oversight(what: str) -> Callable[[argparse.ArgumentParser], None]:
    def setup(p: argparse.ArgumentParser) -> None:
        _api_args(p)
        p.add_argument("id", help=f"id of the {what}")
        _decision_args(p)

    return setup


def _setup_silence(p: argparse.ArgumentParser) -> None:
    _api_args(p)
    p.add_argument("id", help="alert id (or a model name with --model-wide)")
    p.add_argument("--model-wide", action="store_true", help="silence every alert of model ID")
    p.add_argument("--rule", default=None, help="with --model-wide: only this rule")
    _decision_args(p)
    p.add_argument("--duration", type=float, required=True, help="seconds")


def _setup_override(p: argparse.ArgumentParser) -> None:
    _api_args(p)
    p.add_argument("id", help="model name")
    _decision_args(p, "why a person takes over")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until lifted)")
    p.add_argument("--lift", action="store_true", help="end the override")


def _setup_list_alerts(p: argparse.ArgumentParser) -> None:
    _api_args(p)
    p.add_argument("--model", default=None)
    p.add_argument(
        "--state", default=None, choices=("firing", "acknowledged", "silenced", "resolved")
    )


def _setup_ui_link(p: argparse.ArgumentParser) -> None:
    _api_args(p)
    p.add_argument("--hours", type=float, default=24.0, help="how long the link works (default 24)")


def _setup_list_retrains(p: argparse.ArgumentParser) -> None:
    _api_args(p)
    p.add_argument("--model", default=None)
    p.add_argument(
        "--status", default=None, choices=("pending", "approved", "rejected", "sent", "failed", "dry_run")
    )
    p.add_argument(
        "--kind", default=None, choices=("retrain", "rollback", "disable", "all"),
        help="which gated requests (default: retrain)",
    )


def _setup_erase(p: argparse.ArgumentParser) -> None:
    _config_arg(p, required=True)
    p.add_argument("prediction_id", help="the prediction id to erase (never stored: the audit entry keeps an HMAC)")
    p.add_argument("--by", default=os.environ.get("USER", ""), help="who requests it (default: $USER)")


_OVERSIGHT = "monitor.oversight_cli"

COMMANDS: tuple[Command, ...] = (
    Command(
        ("check-config",),
        "monitor.cli",
        "check_config",
        "validate a config file and print it resolved, secrets masked",
        _setup_check_config,
    ),
    Command(("run",), "monitor.app", "main", "run the monitor daemon", _setup_run),
    Command(
        ("demo",),
        "monitor.demo",
        "main",
        "run a self-contained demo (embedded broker, synthetic drifting stream)",
        _setup_demo,
    ),
    Command(
        ("replay",),
        "monitor.replay",
        "main",
        "run the pipeline over recorded events",
        _setup_replay,
    ),
    Command(
        ("reference", "build"),
        "monitor.reference_cli",
        "main",
        "build a reference profile from data",
        _setup_reference_build,
    ),
    Command(
        ("card",),
        "monitor.cards",
        "main",
        "write a model card (Markdown + JSON) from the evaluations and the audit trail",
        _setup_card,
    ),
    Command(
        ("audit", "verify"),
        "monitor.audit",
        "main",
        "check the audit log's hash chain",
        _setup_audit_verify,
    ),
    Command(
        ("audit", "export"),
        "monitor.audit",
        "main",
        "export a model's audit evidence, or an evidence bundle of a period (--bundle)",
        _setup_audit_export,
    ),
    Command(
        ("audit", "redact"),
        "monitor.audit",
        "main",
        "drop audit payloads older than audit.payload_retention_days (the chain still verifies)",
        _setup_audit_redact,
    ),
    Command(
        ("erase",),
        "monitor.privacy",
        "main",
        "erase a prediction id from a stopped daemon's state and reports (running: POST /api/erasures)",
        _setup_erase,
    ),
    Command(
        ("approve",),
        _OVERSIGHT,
        "main",
        "approve a pending retrain, rollback or disable request",
        _oversight("request"),
    ),
    Command(
        ("reject",),
        _OVERSIGHT,
        "main",
        "reject a pending retrain, rollback or disable request",
        _oversight("request"),
    ),
    Command(("ack",), _OVERSIGHT, "main", "acknowledge an alert", _oversight("alert")),
    Command(
        ("silence",),
        _OVERSIGHT,
        "main",
        "silence an alert (or a model) for a while",
        _setup_silence,
    ),
    Command(
        ("override",), _OVERSIGHT, "main", "a person takes over a model's alerting", _setup_override
    ),
    Command(
        ("alerts",), _OVERSIGHT, "main", "list alerts of the running daemon", _setup_list_alerts
    ),
    Command(("retrains",), _OVERSIGHT, "main", "list retrain requests", _setup_list_retrains),
    Command(
        ("ui-link",), _OVERSIGHT, "main", "print a signed, expiring link to the read-only /ui page",
        _setup_ui_link,
    ),
)


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline", description="Streaming drift, performance and fairness monitor."
    )
    parser.add_argument("--version", action="version", version=f"driftline {_version()}")
    top = parser.add_subparsers(dest="_cmd", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in commands:
        if len(cmd.words) == 1:
            sub = top.add_parser(cmd.words[0], help=cmd.help, description=cmd.help)
        else:
            group, leaf = cmd.words
            if group not in groups:
                gp = top.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(
                    dest=f"_{group}", metavar="COMMAND", required=True
                )
            sub = groups[group].add_parser(leaf, help=cmd.help, description=cmd.help)
        cmd.setup(sub)
        sub.set_defaults(_command=cmd, command=" ".join(cmd.words))
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("driftline")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def check_config(args: argparse.Namespace) -> int:
    """``driftline check-config``: exit 0 and print the resolved config, or 2 and the errors."""
    from monitor.config import config_hash, load_config, render_resolved
    from monitor.errors import ConfigError

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        sys.stdout.write(render_resolved(cfg, fmt="json"))
    else:
        sys.stdout.write(f"# {args.config}: valid; config_hash {config_hash(cfg)}\n")
        sys.stdout.write(render_resolved(cfg))
    return EXIT_OK


def _resolve(cmd: Command) -> Callable[[argparse.Namespace], int]:
    try:
        module = importlib.import_module(cmd.module)
    except ModuleNotFoundError as e:
        if e.name != cmd.module:
            raise  # a real import error inside the implementation
        raise SystemExit(
            f"driftline {' '.join(cmd.words)}: not available in this installation "
            f"(module {cmd.module} is missing)"
        ) from None
    func = getattr(module, cmd.function, None)
    if func is None:
        raise SystemExit(
            f"driftline {' '.join(cmd.words)}: {cmd.module} has no function {cmd.function}()"
        )
    return func


def main(argv: Sequence[str] | None = None, commands: Sequence[Command] = COMMANDS) -> int:
    """Console entry point (``driftline = "monitor.cli:main"``); returns the exit code."""
    args = build_parser(commands).parse_args(argv)
    cmd: Command = args._command
    func = _resolve(cmd)
    try:
        code = func(args)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
