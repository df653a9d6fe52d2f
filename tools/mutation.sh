#!/usr/bin/env bash
# Mutation testing of the format core and codecs with mutmut (pinned below): every mutant the
# fast tests of those layers do not kill is listed, with its diff, in DIR/survivors.md.
#
#   tools/mutation.sh              full scope: ddformat/container/, ddformat/codecs/ (not ruo/),
#                                  reader.py, writer.py, weighting.py
#   tools/mutation.sh --small      ddformat/weighting.py and ddformat/container/bits.py
#   tools/mutation.sh --with-ruo   full scope plus ddformat/codecs/ruo/ (much slower)
#   tools/mutation.sh PATH...      only these files (globs as mutmut's only_mutate takes them)
#
# Options:
#   --jobs N         mutants in parallel (default: all cores)
#   --time-limit S   stop after S seconds and report what was run so far
#   --resume         continue the previous run in DIR (same copy and scope; results kept)
#   --deselect TEST  leave out a test, e.g. a slow one, for a quicker rough run (repeatable)
#   --tests PATH     run these tests instead of the default ones below (repeatable), e.g. for
#                    code outside the format core: --tests tests/interop ddformat/interop/fkd.py
#   --rev REV        test commit REV instead of the working tree
#   --work DIR       scratch directory (default ${TMPDIR:-/tmp}/ddformat-mutation)
#
# Mutmut runs in a copy (tracked and untracked, not ignored, files) under DIR, never in the
# checkout, so others can keep working and testing meanwhile. The tests are tests/container,
# tests/codecs and tests/torch_layer/test_weighting_losses.py; each mutant runs only those that
# execute the mutated function, fastest first, stopping at the first failure. docs/mutation.md
# has the recorded runs, the survivors and what was done about each.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MUTMUT_VERSION=3.8.1
TESTS=(tests/container tests/codecs tests/torch_layer/test_weighting_losses.py)
CORE=("ddformat/container/*.py" "ddformat/codecs/*.py" ddformat/reader.py ddformat/writer.py ddformat/weighting.py)

pytest_args=(-p no:cacheprovider)
scope=() tests=() jobs=$(nproc) limit=0 resume=0 rev="" work=${TMPDIR:-/tmp}/ddformat-mutation
while [ $# -gt 0 ]; do
  case $1 in
    --small) scope+=(ddformat/weighting.py ddformat/container/bits.py) ;;
    --with-ruo) scope+=("${CORE[@]}" "ddformat/codecs/ruo/*.py") ;;
    --jobs) jobs=$2; shift ;;
    --time-limit) limit=$2; shift ;;
    --resume) resume=1 ;;
    --rev) rev=$2; shift ;;
    --deselect) pytest_args+=(--deselect "$2"); shift ;;
    --tests) tests+=("$2"); shift ;;
    --work) work=$2; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) scope+=("$1") ;;
  esac
  shift
done
[ ${#scope[@]} -gt 0 ] || scope=("${CORE[@]}")
[ ${#tests[@]} -gt 0 ] && TESTS=("${tests[@]}")

[ -x .venv/bin/python ] || bash tools/setup.sh
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null)" \
     != "$MUTMUT_VERSION" ]; then
  .venv/bin/python -m pip install -q "mutmut==$MUTMUT_VERSION"
fi

tree=$work/tree
toml_list() { printf '"%s", ' "$@" | sed 's/, $//'; }
if [ "$resume" = 1 ]; then
  [ -d "$tree/mutants" ] || { echo "nothing to resume in $tree" >&2; exit 2; }
  read -r -a scope <<< "$(sed -n 's/^only_mutate = \[\(.*\)\]$/\1/p' "$tree/pyproject.toml" | tr -d '",')"
else
  rm -rf "$tree"
  mkdir -p "$tree"
  if [ -n "$rev" ]; then
    git archive "$rev" | tar -xf - -C "$tree"
  else
    git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - -- | tar -xf - -C "$tree"
  fi
  {
    echo
    echo "[tool.mutmut]"
    echo 'source_paths = ["ddformat"]'
    echo "only_mutate = [$(toml_list "${scope[@]}")]"
    echo 'also_copy = ["spec", "producers", "tools"]'
    echo "pytest_add_cli_args_test_selection = [$(toml_list "${TESTS[@]}")]"
    echo "pytest_add_cli_args = [$(toml_list "${pytest_args[@]}")]"
    echo 'process_isolation = "forkserver"'
  } >> "$tree/pyproject.toml"
fi

cd "$tree"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PATH="$REPO/.venv/bin:$PATH"
echo "mutmut $MUTMUT_VERSION in $tree (${rev:-working tree} of $REPO) over: ${scope[*]}"
start=$(date +%s)
run=(mutmut run --max-children "$jobs")
[ "$limit" -gt 0 ] && run=(timeout --signal=INT --kill-after=60 "$limit" "${run[@]}")
# Progress is redrawn with carriage returns behind braille spinners: keep only the lines that stay.
set +e
"${run[@]}" 2>&1 | tr '\r' '\n' | LC_ALL=C grep -av $'^\xe2[\xa0-\xa3]'
status=${PIPESTATUS[0]}
set -e
echo "mutmut run: exit $status after $(( $(date +%s) - start )) s"

mutmut results --all true > "$work/results.txt" || true
report=$work/survivors.md
{
  echo "# Mutants not killed ($(date -u +%Y-%m-%dT%H:%MZ), mutmut $MUTMUT_VERSION)"
  echo
  echo "Scope: ${scope[*]}"
  echo
  echo "| status | mutants |"
  echo "|---|---|"
  awk -F': ' 'NF == 2 {n[$2]++} END {for (s in n) print "| " s " | " n[s] " |"}' "$work/results.txt" | sort
  echo
  for name in $(awk -F': ' '$2 ~ /survived|no tests|timeout|suspicious|segfault/ {gsub(/ /, "", $1); print $1}' \
                "$work/results.txt"); do
    echo "## $name ($(grep -F "$name:" "$work/results.txt" | sed 's/.*: //'))"
    echo
    echo '```diff'
    mutmut show "$name" 2>&1 | sed '/^$/d'
    echo '```'
    echo
  done
} > "$report"
sed -n '1,/^## /p' "$report" | sed '$d'
echo "survivors with diffs: $report"
exit "$status"
