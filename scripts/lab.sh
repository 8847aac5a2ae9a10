#!/bin/sh
# lab.sh — make lab: every lab number and picture the docs show, measured again.
#   1. waits until the machine is quiet: the 1-minute load average under LAB_QUIET
#      (0.7), polled every 30 s for up to LAB_WAIT seconds (600); other jobs' load
#      slows every row, so a busy machine is named in the stamp, not hidden;
#   2. runs the resnet_small lab (every setting, LAB_ROUNDS rounds, default 2) and the
#      perceptron's (LAB_MLP_ROUNDS, default 3), interleaved: docs/stall-lab*.md, their
#      pictures, and docs/runs/stall-lab*.keys;
#   3. runs every CPU command of docs/guide.md 5 times, interleaved, for the verdicts and
#      numbers the guide quotes (scripts/guide-runs.sh -> docs/runs/guide.keys), and
#      ./bench kernels (docs/runs/bench-kernels.txt; scripts/kernels-keys.sh ->
#      docs/runs/kernels.keys, quoted by docs/kernels.md and the guide);
#   4. stamps docs/runs/lab.keys with the commit, the machine and the load;
#   5. writes the marked values into the docs (scripts/docs-check.sh --update).
set -e
cd "$(dirname "$0")/.."
quiet=${LAB_QUIET:-0.7}
wait_max=${LAB_WAIT:-600}
waited=0
load1() { cut -d' ' -f1 /proc/loadavg; }
while [ "$(echo "$(load1) < $quiet" | awk '{ print ($1 < $3) }')" != 1 ] && [ "$waited" -lt "$wait_max" ]; do
  echo "lab: load $(load1), waiting for it to fall under $quiet ($waited s of $wait_max)"
  sleep 30
  waited=$((waited + 30))
done
start_load=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$(echo "$(load1) < $quiet" | awk '{ print ($1 < $3) }')" = 1 ]; then
  quiet_words="yes (1-minute load under $quiet after waiting ${waited} s)"
else
  quiet_words="no (1-minute load still $(load1) after waiting ${waited} s; measured anyway)"
fi
echo "lab: measuring at load $start_load; quiet: $quiet_words"
t0=$(date +%s)
./bench pipeline --rounds "${LAB_ROUNDS:-2}"
./bench pipeline --config configs/mlp.cfg --name stall-lab-mlp --rounds "${LAB_MLP_ROUNDS:-3}"
sh scripts/guide-runs.sh
./bench kernels >docs/runs/bench-kernels.txt
sh scripts/kernels-keys.sh docs/runs/bench-kernels.txt
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- src include tools kernels models configs 2>/dev/null; then commit="$commit+changes"; fi
{
  echo "# written by make lab (scripts/lab.sh); do not edit by hand"
  echo "lab.commit=$commit"
  echo "lab.when=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "lab.machine=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) CPUs"
  echo "lab.load_before=$start_load"
  echo "lab.load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "lab.quiet=$quiet_words"
  echo "lab.seconds=$(($(date +%s) - t0))"
} >docs/runs/lab.keys
sh scripts/docs-check.sh --update
echo "lab: done in $(($(date +%s) - t0)) s; stamp in docs/runs/lab.keys"
