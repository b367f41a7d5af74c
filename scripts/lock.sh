#!/usr/bin/env bash
# Re-lock: resolve pyproject.toml's ranges afresh (new venv, no pip cache), write every exact version
# to requirements-lock.txt, then run the whole suite in another fresh venv installed from that lock.
# If the suite fails, the new lock is what broke it: fix the code or cap the range, or `git checkout
# requirements-lock.txt` to go back.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LOCK=requirements-lock.txt
export PIP_NO_CACHE_DIR=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
pip="$work/venv/bin/python -m pip"
$pip install --quiet --upgrade pip
$pip install --quiet $TORCH_SPEC           # first: an unpinned torch would pull a CUDA build
$pip install --quiet hatchling -e ".[all]" --group dev

{
  echo "# The exact versions that 'make run', 'make test' and CI install, as pip constraints (-c)."
  echo "# Written by 'make lock' ($(date -u +%Y-%m-%d), $("$work/venv/bin/python" -V), $(uname -m)); do not edit by hand."
  echo "# torch carries no local label (+cpu/+cuXXX) so the CUDA build of the same version also satisfies it."
  $pip freeze --all --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' | LC_ALL=C sort -f
} > "$LOCK.tmp"
mv "$LOCK.tmp" "$LOCK"
echo "wrote $LOCK ($(grep -vc '^#' "$LOCK") packages); running the suite in a fresh venv from it" >&2

rm -rf .venv
make test
