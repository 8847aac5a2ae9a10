#!/bin/sh
# kernels-keys.sh FILE — the numbers docs/kernels.md and docs/guide.md quote from a
# `./bench kernels` run (FILE holds its output), as docs/runs/kernels.keys for the
# docs' markers (scripts/docs-check.sh). make lab runs the bench and then this.
set -e
in=$1
out=docs/runs/kernels.keys
awk -v when="$(date -u '+%Y-%m-%d %H:%M UTC')" '
  function rng(lo, hi, fmt) { return sprintf(fmt "-" fmt, lo, hi) }
  function upd(name, v) { if (!(name in lo) || v < lo[name]) lo[name] = v; if (!(name in hi) || v > hi[name]) hi[name] = v }
  /^load average before:/ { before = $4 " " $5 " " $6 }
  /^load average after:/ { after = $4 " " $5 " " $6 }
  /^peak FLOP\/s:/ { peak = $3; for (i = 1; i <= NF; i++) if ($i == "GFLOP/s" && $(i + 1) == "on" && $(i + 2) == "1") one = $(i - 1) }
  /^peak bytes\/s:/ { bw = $3 }
  # kernel rows: name ... loop_ms vec_ms speedup loop_rate unit vec_rate unit loop%pk vec%pk err
  /^(conv|matmul|relu|add|normalize|batchnorm) / {
    s = 0
    for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+x$/) { s = i; break }
    if (!s) next
    speed = $s; sub(/x$/, "", speed); lr = $(s + 1); vr = $(s + 3); lp = $(s + 5); vp = $(s + 6)
    sub(/%$/, "", lp); sub(/%$/, "", vp)
    speed += 0; lr += 0; vr += 0; lp += 0; vp += 0   # numbers, not strings, for the comparisons
    if ($1 == "conv") { upd("conv_speed", speed); upd("conv_vec_pk", vp); upd("loop_gf", lr) }
    if ($1 == "matmul") { upd("mm_vec_pk", vp); upd("loop_gf", lr); if ($2 ~ /^(1024|2048)x/) { upd("cliff_speed", speed); upd("cliff_gf", lr) } }
    if ($1 == "relu") { relu_loop = lr; relu_vec = vr; relu_speed = speed }
    if ($1 == "add" && $2 ~ /M$/) add_loop = lr
    if ($1 == "normalize") { norm_loop = lr; norm_vec = vr; norm_pk = vp }
    if ($1 == "batchnorm" && $3 == "128x16x784") upd("bn_large_pk", vp)
    if ($1 == "batchnorm" && $3 == "128x64x49") upd("bn_small_pk", vp)
  }
  /^op_add per row of 256/ { row_x = $NF; row_us = $(NF - 2) }
  /^op_add per element/ { el_x = $NF; el_us = $(NF - 2) }
  /^add kernel per element, no op layer/ { bare_x = $NF }
  END {
    print "# written by make lab (scripts/kernels-keys.sh from ./bench kernels, docs/runs/bench-kernels.txt); do not edit by hand"
    print "kernels.when=" when
    print "kernels.load_before=" before
    print "kernels.load_after=" after
    print "kernels.peak_gflops=" peak
    print "kernels.peak_gflops_1thread=" one
    print "kernels.peak_gbs=" bw
    print "kernels.loop_gflops_range=" rng(lo["loop_gf"], hi["loop_gf"], "%.1f")
    print "kernels.conv_speedup_range=" rng(lo["conv_speed"], hi["conv_speed"], "%.0f")
    print "kernels.conv_vec_peak_range=" rng(lo["conv_vec_pk"], hi["conv_vec_pk"], "%.0f") "%"
    print "kernels.matmul_vec_peak_range=" rng(lo["mm_vec_pk"], hi["mm_vec_pk"], "%.0f") "%"
    print "kernels.matmul_cliff_gflops=" rng(lo["cliff_gf"], hi["cliff_gf"], "%.2f")
    print "kernels.matmul_cliff_speedup_range=" rng(lo["cliff_speed"], hi["cliff_speed"], "%.0f")
    print "kernels.relu_loop_gbs=" relu_loop
    print "kernels.relu_vec_gbs=" relu_vec
    print "kernels.relu_speedup=" relu_speed
    print "kernels.add_loop_gbs=" add_loop
    print "kernels.normalize_loop_gbs=" norm_loop
    print "kernels.normalize_vec_gbs=" norm_vec
    print "kernels.normalize_vec_peak=" norm_pk "%"
    print "kernels.bn_large_peak_range=" rng(lo["bn_large_pk"], hi["bn_large_pk"], "%.0f") "%"
    print "kernels.bn_small_peak_range=" rng(lo["bn_small_pk"], hi["bn_small_pk"], "%.0f") "%"
    print "kernels.dispatch_element_x=" el_x
    print "kernels.dispatch_element_us=" el_us
    print "kernels.dispatch_row_x=" row_x
    print "kernels.dispatch_row_us=" row_us
    print "kernels.dispatch_bare_x=" bare_x
  }' "$in" >"$out"
echo "kernels-keys: $(grep -c = "$out") values from $in -> $out"
