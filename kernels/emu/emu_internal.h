// emu_internal.h — what the emulated device's files share (emu.cpp: memory,
// streams, copies, events; emu_launch.cpp: blocks as fibers, barriers, shuffles,
// faults; emu_blas.cpp: cuBLAS). Tests only; cuda_runtime.h here says what the
// device emulates and why.
#ifndef NS_EMU_INTERNAL_H
#define NS_EMU_INTERNAL_H

#include <atomic>
#include <functional>

#include "cuda_runtime.h"

#if defined(__SANITIZE_THREAD__)
#define EMU_TSAN 1
#else
#define EMU_TSAN 0
#endif

// A broken invariant of the device (a guard zone overwritten, a barrier nobody can
// pass): a bug in a kernel, reported with the reason, and the process stops.
[[noreturn]] void emu_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// The calling thread's cudaGetLastError becomes e; returns e.
cudaError_t emu_fail(cudaError_t e);
// A fault broke the context: every later call returns it, and the streams run no
// more work (event records still complete, so no waiter hangs).
extern std::atomic<int> emu_sticky;
bool emu_broken(void);
enum emu_counter { EMU_LAUNCHES, EMU_COPIES, EMU_BARRIERS, EMU_FIBERED_BLOCKS, EMU_COUNTERS };
void emu_count(enum emu_counter c);  // emu_get_counts (emu.h) reads them
// Queues op on stream s (which runs it later, in order).
cudaError_t emu_enqueue(cudaStream_t s, std::function<void()> op);
// [p, p + bytes) lies inside one device allocation.
bool emu_is_device_range(const void *p, size_t bytes);
// cuBLAS handles made and not yet destroyed (emu_live_objects, emu.h).
extern std::atomic<int> emu_live_blas;
// Installs the handler that turns a kernel's SIGSEGV or SIGBUS into a fault (once).
void emu_catch_faults(void);

#endif
