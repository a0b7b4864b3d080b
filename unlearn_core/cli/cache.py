"""``cache info|clear``: what the disk caches hold, their keys, and how to drop them."""

from __future__ import annotations

from unlearn_core.cli.common import add_command, emit, settings_of


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_cache(args) -> None:
    from unlearn_core.core.cache import CACHE_VERSION
    from unlearn_core.core.cache_admin import audit_markdown, cache_info, clear_cache

    if getattr(args, "markdown", False):
        print(audit_markdown(), end="")
        return
    cache_dir = settings_of(args).cache_dir
    if args.cache_cmd == "clear":
        gone = clear_cache(cache_dir, args.kind)
        lines = [f"removed {r['kind']}: {r['files']} files, {_human_bytes(r['bytes'])}" for r in gone]
        emit(args, {"cache_dir": cache_dir, "removed": gone}, "\n".join(lines) or "nothing to remove")
        return
    rows = cache_info(cache_dir)
    lines = [
        f"cache folder {cache_dir} (key version {CACHE_VERSION}; `cache clear` removes the derived kinds, "
        "`cache clear --kind K` any one)"
    ]
    lines += [
        f"{r['kind']:>14}  {r['files']:>6} files  {_human_bytes(r['bytes']):>10}  "
        f"{'derived' if r['derived'] else 'user results'}: {r['what']}\n{'':>16}key: {r['key']}"
        for r in rows
    ]
    emit(args, {"cache_dir": cache_dir, "version": CACHE_VERSION, "kinds": rows}, "\n".join(lines))


def add_parsers(sub) -> None:
    s = sub.add_parser("cache", help="what the disk caches hold, their keys, and how to drop them")
    csub = s.add_subparsers(dest="cache_cmd", required=True)
    c = add_command(csub, "info", cmd_cache, help="each cache kind: files, size, what it is keyed by")
    c.add_argument("--markdown", action="store_true", help="print the audit page (docs/research/caches.md) instead")
    c = add_command(csub, "clear", cmd_cache, help="remove cached entries (every derived kind, or the kinds named)")
    c.add_argument(
        "--kind",
        action="append",
        help="a kind from `cache info` (repeat for several); user results "
        "(rmu, jobs, targets) are removed only when named",
    )
