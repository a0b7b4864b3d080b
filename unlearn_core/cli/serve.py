"""``serve``: the HTTP API server holding the model."""

from __future__ import annotations

from unlearn_core.cli.common import add_command, settings_of


def cmd_serve(args) -> None:
    from unlearn_core.server import serve

    serve(
        settings_of(args),
        host=args.host,
        port=args.port,
        tiny=args.tiny,
        log_level="info" if args.verbose else "warning",
    )


def add_parsers(sub) -> None:
    s = add_command(sub, "serve", cmd_serve, help="HTTP API server holding the model (docs at /docs)")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (set UNLEARN_TOKEN before exposing it)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--tiny", action="store_true", help="tiny random test backend instead of the real model")
