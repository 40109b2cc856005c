# Sourced by scripts/*_mutations.sh: run NAME FILE OLD NEW "TESTS" applies one mutation (OLD ->
# NEW in FILE) to a fresh copy of the working tree (tracked and untracked, not ignored files),
# runs TESTS there and prints pytest's last line: it should say "failed" or "errors".
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
baseline() {  # the tests on an unmutated copy: they must pass, or no mutation result means much
  run baseline README.md "" "" "$1"
}
run() {
  local name=$1 file=$2 from=$3 to=$4 tests=$5 copy
  # the copy sits beside a link to ../shared, as the checkout does (tests may read it)
  copy=$(mktemp -d)/repo
  mkdir "$copy" && ln -s "$ROOT/../shared" "$(dirname "$copy")/shared"
  git -C "$ROOT" ls-files -co --exclude-standard | tar -C "$ROOT" -cf - -T - | tar -C "$copy" -xf -
  if ! python - "$copy/$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
assert old in text, f"{path}: {old!r} not found (the code moved: update the mutation)"
open(path, "w").write(text.replace(old, new))
PY
  then
    echo "[$name] NOT APPLIED: the code moved, update the mutation"
    rm -rf "$(dirname "$copy")"
    return
  fi
  # shellcheck disable=SC2086
  (cd "$copy" && PYTHONPATH="$copy" timeout 900 python -m pytest -q -p no:cacheprovider $tests \
    2>&1 | tail -1 | sed "s/^/[$name] /")
  rm -rf "$(dirname "$copy")"
}
