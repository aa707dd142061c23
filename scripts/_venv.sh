# Sourced by scripts/up and scripts/test: make .venv (Python 3.10+) and install tk into it.
# Usage: ensure_venv EXTRAS   (e.g. ensure_venv "dev,serve"; "" for none)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TK_VENV:-$ROOT/.venv}"

ensure_venv() {
    local extras="$1" py="${PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "tk needs Python 3.10 or newer as '$py' (set PYTHON=/path/to/python3.x)" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                echo "installing python3-venv (Debian/Ubuntu)..." >&2
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
                "$py" -m venv "$VENV"
            else
                echo "cannot create a virtual environment: install python3-venv" \
                     "(sudo apt-get install python3-venv) and run this again" >&2
                exit 1
            fi
        fi
    fi
    local spec="$ROOT" stamp="$VENV/.tk-installed-${extras:-base}"
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        local log="$VENV/pip-install.log"
        echo "installing tk${extras:+[$extras]} into $VENV (log: $log) ..." >&2
        if ! { "$VENV/bin/python" -m pip install --upgrade pip \
                && "$VENV/bin/python" -m pip install -e "$spec"; } >"$log" 2>&1; then
            tail -n 25 "$log" >&2
            echo "pip install failed; the whole log is in $log" >&2
            exit 1
        fi
        touch "$stamp"
    fi
}
