#!/bin/sh
# mutants.sh [PATCH...] — mutation testing of the suite (make mutants; not part of CI).
# Each tests/mutations/*.patch plants one bug that a test once let through. For each
# patch: a copy of the tree gets the patch, is rebuilt (CPU build) and runs every suite,
# stopping at the first suite that fails; when none does, test_cuda on the emulated
# device (build/emu, both thread orders) runs too, as make test does. A patch the
# suites fail on is "killed"; one they pass with "SURVIVED": a test is missing. Exit
# status 1 if any survived.
set -e
cd "$(dirname "$0")/.."
ROOT=$PWD
T=build/mutants/tree
PATCHES=${*:-$(ls tests/mutations/*.patch)}

# A fresh copy of the working tree (tracked files and new ones git doesn't ignore).
rm -rf "$T" && mkdir -p "$T"
git ls-files -co --exclude-standard | tar -cf - -T - | (cd "$T" && tar -xf -)
cd "$T"
build() { make --no-print-directory -s CUDA=0 all $(ls tests/test_*.c | sed 's|^tests/\(.*\)\.c$|build/tests/\1|') >build.log 2>&1; }
build_emu() { make --no-print-directory -s CUDA=emu BUILD=build/emu build/emu/tests/test_cuda >build.log 2>&1; }
suites() {
  for t in build/tests/test_*; do
    "$t" --jobs 1 >suite.log 2>&1 || { echo "$(basename "$t")"; return 0; }
  done
  if ! build_emu; then echo "the emulated build"; return 0; fi
  sh scripts/test-emu.sh build/emu/tests/test_cuda >suite.log 2>&1 || { echo "test_cuda on the emulated device"; return 0; }
  echo ""
}
echo "mutants: building the unmutated tree in $T"
build || { tail -20 build.log; exit 1; }
first=$(suites)
[ -z "$first" ] || { echo "mutants: $first fails without any mutation; fix that first"; exit 1; }

survived=""; killed=0
for p in $PATCHES; do
  name=$(basename "$p" .patch)
  patch -s -p1 --forward <"$ROOT/$p" || { echo "mutants: $name does not apply any more: update it"; exit 1; }
  if ! build; then
    echo "  killed    $name (it no longer builds)"; killed=$((killed + 1))
  else
    by=$(suites)
    if [ -n "$by" ]; then echo "  killed    $name (by $by)"; killed=$((killed + 1))
    else echo "  SURVIVED  $name: $(sed -n 1p "$ROOT/$p")"; survived="$survived $name"; fi
  fi
  patch -s -p1 -R <"$ROOT/$p"
done
build
echo "mutants: $killed killed, $(echo $survived | wc -w) survived${survived:+:$survived}"
[ -z "$survived" ]
