"""``info``: the settings and data sources (with ``--load``, the loaded model too)."""

from __future__ import annotations

from unlearn_core.cli.common import add_settings_args, emit, engine_of, settings_of
from unlearn_core.data import loaders as D


def cmd_info(args) -> None:
    s = settings_of(args)
    out = {"settings": s.as_dict(), "data_sources": D.data_sources(s.data_dir)}
    if args.load:
        out["engine"] = engine_of(args).info()
    lines = [f"{k:>14}: {v}" for k, v in s.as_dict().items()] + ["data sources:"]
    lines += [f"{k:>14}: {v}" for k, v in out["data_sources"].items()]
    if args.load:
        lines += ["loaded:"] + [f"{k:>14}: {v}" for k, v in out["engine"].items() if k != "data_sources"]
    emit(args, out, "\n".join(lines))


def add_parsers(sub) -> None:
    s = sub.add_parser("info", help="print the settings, data sources (and with --load, the loaded model)")
    add_settings_args(s)
    s.add_argument("--load", action="store_true", help="also load the model and SAEs")
    s.set_defaults(func=cmd_info)
