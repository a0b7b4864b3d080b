"""``info``: the settings and data sources (with ``--load``, the loaded model too); ``prepare``:
the one-time conversion of the embedded model, which ``scripts/setup.sh`` runs so that the first
demo, server start or test does not pay it."""

from __future__ import annotations

from unlearn_core.cli.common import add_command, emit, engine_of, settings_of
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


def cmd_prepare(args) -> None:
    from unlearn_core.model.models import EMBEDDED_PREFIX, convert_embedded_model, embedded_model_dir

    s = settings_of(args)
    if not s.model.startswith(EMBEDDED_PREFIX):
        emit(args, {"model": s.model, "prepared": None}, f"{s.model}: not the embedded model; nothing to prepare")
        return
    had = (embedded_model_dir(s.cache_dir) / "model.safetensors").exists()
    path = convert_embedded_model(s.cache_dir, progress=not args.json)
    verb = "already prepared" if had else "converted"
    emit(args, {"model": s.model, "prepared": str(path), "converted": not had}, f"{s.model}: {verb} ({path})")


def add_parsers(sub) -> None:
    s = add_command(sub, "info", cmd_info, help="print the settings, data sources (and with --load, the loaded model)")
    s.add_argument("--load", action="store_true", help="also load the model and SAEs")
    s = add_command(sub, "prepare", cmd_prepare, help="convert the embedded model once (scripts/setup.sh runs this)")
