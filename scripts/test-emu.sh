#!/bin/sh
# test-emu.sh TEST_CUDA — test_cuda on the emulated CUDA device (kernels/emu/), once for
# each order in which a block's threads may run between barriers: a kernel missing a
# barrier reads what another thread hasn't written yet under one order or the
# other, every time. Fails if a test fails or is skipped, except for an entry a CUDA
# table leaves NULL ("not supported by that table", backend.h): that skip is the
# table's own answer, listed, not the device's. NS_EMU_ORDERS="forward reversed
# interleaved" picks the orders.
t=${1:?usage: test-emu.sh build/emu/tests/test_cuda}
status=0
for order in ${NS_EMU_ORDERS:-forward reversed}; do
  echo "== $t on the emulated device, threads in $order order"
  log=$(mktemp)
  start=$(date +%s)
  NS_EMU_ORDER=$order "$t" --jobs 1 --verbose >"$log" 2>&1
  rc=$?
  grep -v '^\[RUN \]\|^\[PASS\]\|^\[----\] Criterion\|^\[====\] Running' "$log"
  if grep '^\[SKIP\]' "$log" | grep -qv 'not supported by that table'; then
    echo "test-emu: tests were skipped on the emulated device (above): they should run here"
    status=1
  fi
  [ $rc = 0 ] || status=1
  echo "== $order: exit $rc after $(($(date +%s) - start)) s"
  rm -f "$log"
done
[ $status = 0 ] && echo "test-emu: test_cuda passed on the emulated device in every order"
exit $status
