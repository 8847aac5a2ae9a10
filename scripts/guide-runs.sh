#!/bin/sh
# guide-runs.sh — every CPU command of docs/guide.md run ROUNDS times (default 5),
# interleaved (round 1 of every command, then round 2, ...), so that machine load
# falls on all of them alike. For each command it keeps what the report said of the
# steady state, and writes docs/runs/guide.keys for the docs' markers:
#   guide.NAME.verdicts     each round's verdict, and how many rounds gave it
#   guide.NAME.verdict      the verdict when every round agreed, else "varies: ..."
#   guide.NAME.images_s     median steady-state images/s, and its min-max as _range
#   guide.NAME.waiting      median steady-state share of step time waiting, and _range
#   guide.NAME.loader_cpu   median loader share of the process's CPU time
# make lab runs it after the pipeline labs. Needs ./train and the prepared dataset.
set -e
cd "$(dirname "$0")/.."
rounds=${GUIDE_ROUNDS:-5}
out=docs/runs/guide.keys
tmp=$(mktemp -d)
cut="--set train.eval_every=0 --set 'train.checkpoint=\"\"'"
# NAME|arguments after ./train (the guide's commands; GPU ones need a GPU and are left out)
cat >"$tmp/commands" <<EOF
naive|configs/stall_naive.cfg
fixed|configs/stall_fixed.cfg
storage-inline|configs/resnet_small.cfg --set loader.workers=0 --set loader.io_delay_us=1000 --set train.max_steps=30 $cut
storage-mlp-w2|configs/mlp.cfg --set loader.cache=none --set loader.io_delay_us=1000 --set loader.prefetch=16 --set loader.workers=2 --set train.max_steps=60 $cut
storage-mlp-w8|configs/mlp.cfg --set loader.cache=none --set loader.io_delay_us=1000 --set loader.prefetch=16 --set loader.workers=8 --set train.max_steps=60 $cut
storage-mlp-w16|configs/mlp.cfg --set loader.cache=none --set loader.io_delay_us=1000 --set loader.prefetch=16 --set loader.workers=16 --set train.max_steps=60 $cut
decode-inline|configs/mlp.cfg --set loader.cache=none --set loader.workers=0 --set train.max_steps=200 $cut
decode-w2|configs/mlp.cfg --set loader.cache=none --set loader.workers=2 --set train.max_steps=200 $cut
decode-packed|configs/mlp.cfg --set loader.cache=packed --set loader.workers=2 --set train.max_steps=200 $cut
prefetch-1|configs/resnet_small.cfg --set loader.workers=2 --set loader.prefetch=1 --set loader.io_delay_us=1000 --set train.max_steps=30 $cut
one-worker|configs/resnet_small.cfg --set loader.workers=1 --set loader.prefetch=4 --set loader.io_delay_us=1000 --set train.max_steps=30 $cut
loop-kernels|configs/resnet_small.cfg --set train.kernels=loop --set train.max_steps=4 $cut
wide-model|configs/resnet_small.cfg --set model.widths=32,64,128 --set train.max_steps=30 $cut
EOF
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
for r in $(seq "$rounds"); do
  while IFS='|' read -r name args; do
    echo "guide-runs: round $r of $rounds: $name"
    # the report's lines; a failed run is an error (the guide's commands must run)
    if ! eval "./train $args" >"$tmp/$name.$r.txt" 2>&1; then
      tail -n 20 "$tmp/$name.$r.txt" >&2
      echo "guide-runs: ./train $args failed (round $r)" >&2
      exit 1
    fi
  done <"$tmp/commands"
done
{
  echo "# written by make lab (scripts/guide-runs.sh, $rounds interleaved rounds); do not edit by hand"
  echo "guide.rounds=$rounds"
  echo "guide.when=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "guide.load_before=$load_before"
  echo "guide.load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "guide.seconds=$(($(date +%s) - t0))"
  while IFS='|' read -r name args; do
    # per round: verdict (steady state), images/s (steady state), waiting %, loader CPU %
    for r in $(seq "$rounds"); do
      awk '
        /^verdict: / { v = $0; sub(/^verdict: /, "", v); sub(/ in the steady state.*/, "", v); sub(/ \(.*/, "", v) }
        /^  throughput / { s = $0; if (match(s, /[0-9]+ in the steady state/)) ips = substr(s, RSTART, RLENGTH) + 0
                           else if (match(s, /throughput [0-9]+/)) ips = substr(s, RSTART + 11, RLENGTH - 11) + 0 }
        /^  waiting / { w = $4; sub(/%/, "", w) }
        /^  loader CPU / { c = $3; sub(/%/, "", c) }
        END { printf "%s|%s|%s|%s\n", v, ips, w, c }' "$tmp/$name.$r.txt"
    done >"$tmp/$name.rows"
    awk -F'|' -v name="$name" -v rounds="$rounds" '
      function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      { n++; seen[$1]++; if (!($1 in order)) { order[$1] = ++kinds; kind[kinds] = $1 }
        ips[n] = $2; wait[n] = $3; cpu[n] = $4; ipsmin = (n == 1 || $2 < ipsmin) ? $2 : ipsmin
        ipsmax = (n == 1 || $2 > ipsmax) ? $2 : ipsmax; wmin = (n == 1 || $3 < wmin) ? $3 : wmin
        wmax = (n == 1 || $3 > wmax) ? $3 : wmax }
      END {
        list = ""; for (k = 1; k <= kinds; k++) list = list (k > 1 ? ", " : "") kind[k] " x" seen[kind[k]]
        printf "guide.%s.verdicts=%s\n", name, list
        printf "guide.%s.verdict=%s\n", name, kinds == 1 ? kind[1] : "varies: " list
        printf "guide.%s.images_s=%.0f\n", name, median(ips, n)
        printf "guide.%s.images_s_range=%.0f-%.0f\n", name, ipsmin, ipsmax
        printf "guide.%s.waiting=%.1f%%\n", name, median(wait, n)
        printf "guide.%s.waiting_range=%.1f-%.1f%%\n", name, wmin, wmax
        printf "guide.%s.loader_cpu=%.1f%%\n", name, median(cpu, n)
      }' "$tmp/$name.rows"
  done <"$tmp/commands"
} >"$out"
echo "guide-runs: $rounds rounds of $(wc -l <"$tmp/commands") commands in $(($(date +%s) - t0)) s -> $out"
rm -rf "$tmp"
