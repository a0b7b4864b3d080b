#!/usr/bin/env bash
# The documentation site from a fresh clone, in one command:
#   bash scripts/docs.sh          # set up .venv, check the generated pages, build site/ (strict)
#   bash scripts/docs.sh serve    # the same checks, then serve the site on http://127.0.0.1:8000
# The generated pages (docs/reference/, docs/results/*.md, the include blocks, the Results nav) must
# be current: if the check fails, run `.venv/bin/python scripts/gen_docs.py` and commit the result.
# The site needs no model: the embedded model's one-time conversion is skipped here
# (UNLEARN_SKIP_PREPARE=1 unless set otherwise).
set -euo pipefail
export NO_MKDOCS_2_WARNING=1  # Material's end-of-life banner, not a build problem

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UNLEARN_SKIP_PREPARE="${UNLEARN_SKIP_PREPARE:-1}" bash scripts/setup.sh
.venv/bin/python scripts/gen_docs.py --check

case "${1:-build}" in
    build)
        .venv/bin/mkdocs build --strict --site-dir site
        echo "[docs] built $ROOT/site (open site/index.html, or: bash scripts/docs.sh serve)"
        ;;
    serve)
        exec .venv/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000
        ;;
    *)
        echo "usage: bash scripts/docs.sh [build|serve]" >&2
        exit 2
        ;;
esac
