// emu.cpp — the emulated CUDA device's runtime: settings, errors, the device, memory
// (a registry of allocations with guard zones), streams (a worker thread and its
// queue each), copies and events; and the failure injection of the cleanup tests.
// Launches and the block scheduler are in emu_launch.cpp, cuBLAS in emu_blas.cpp.
// Tests only; cuda_runtime.h here says what it emulates and why.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "emu_internal.h"

// A broken invariant of the device (a guard zone overwritten, a barrier nobody can
// pass): the kernel has a bug, and stopping here with the reason is the test's
// failure. Errors a real GPU returns as codes are returned as codes instead.
[[noreturn]] void emu_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emulated CUDA device: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
uint64_t emu_global_ns(void) { return now_ns(); }

// ---- settings and counters ----------------------------------------------------------
// Atomics, not a lock: a lock taken by every barrier and every copy would order the
// device's threads against each other where CUDA doesn't, and could hide from
// ThreadSanitizer the very races tsan_cuda is there to catch.

static std::atomic<int> order_setting{-1};  // enum emu_order; -1: NS_EMU_ORDER not read yet
static std::atomic<unsigned> copy_delay_us{0};
static std::atomic<uint64_t> counters[EMU_COUNTERS];

extern "C" const char *emu_order_name(enum emu_order o) {
    return o == EMU_REVERSED ? "reversed" : o == EMU_INTERLEAVED ? "interleaved" : "forward";
}
extern "C" void emu_set_order(enum emu_order o) { order_setting.store(o); }
extern "C" enum emu_order emu_get_order(void) {
    int o = order_setting.load();
    if (o >= 0) return (enum emu_order)o;
    const char *env = getenv("NS_EMU_ORDER");
    int from_env = EMU_FORWARD;
    for (int i = EMU_FORWARD; env && i <= EMU_INTERLEAVED; i++)
        if (strcmp(env, emu_order_name((enum emu_order)i)) == 0) from_env = i;
    order_setting.compare_exchange_strong(o, from_env);  // unless set meanwhile
    return (enum emu_order)order_setting.load();
}
extern "C" void emu_set_copy_delay_us(unsigned us) { copy_delay_us.store(us); }
extern "C" struct emu_counts emu_get_counts(void) {
    struct emu_counts c;
    c.launches = counters[EMU_LAUNCHES].load(std::memory_order_relaxed);
    c.copies = counters[EMU_COPIES].load(std::memory_order_relaxed);
    c.barriers = counters[EMU_BARRIERS].load(std::memory_order_relaxed);
    c.fibered_blocks = counters[EMU_FIBERED_BLOCKS].load(std::memory_order_relaxed);
    return c;
}
void emu_count(enum emu_counter c) { counters[c].fetch_add(1, std::memory_order_relaxed); }

// ---- errors -----------------------------------------------------------------------

static thread_local cudaError_t last_error = cudaSuccess;
// A kernel that touched memory it can't (SIGSEGV or SIGBUS inside a kernel) breaks
// the context for good, as on a GPU: every later call returns the error.
std::atomic<int> emu_sticky{cudaSuccess};

cudaError_t emu_fail(cudaError_t e) {
    last_error = e;
    return e;
}

cudaError_t cudaGetLastError(void) {
    if (emu_sticky.load() != cudaSuccess) return (cudaError_t)emu_sticky.load();
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
// After a fault the device runs nothing more (event records still complete, so no
// waiter hangs), as a broken GPU context does.
bool emu_broken(void) { return emu_sticky.load() != cudaSuccess; }
#define STICKY() \
    do { \
        if (emu_sticky.load() != cudaSuccess) return emu_fail((cudaError_t)emu_sticky.load()); \
    } while (0)

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulated device)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated device)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated device)";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (emulated device off)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated device)";
    case cudaErrorInvalidResourceHandle:
        return "invalid resource handle (emulated device; stream 0 is not emulated)";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress:
        return "an illegal memory access was encountered (emulated device: a kernel faulted)";
    default: return "unexpected error (emulated device)";
    }
}

// ---- the device --------------------------------------------------------------------

enum { EMU_SMS = 4 };  // few SMs, so grid-stride loops go round several times
static const size_t EMU_MEMORY = (size_t)16 << 30;

cudaError_t cudaGetDeviceCount(int *n) {
    if (getenv("NS_EMU_NO_DEVICE")) {  // to test the no-GPU paths with this build
        *n = 0;
        return emu_fail(cudaErrorNoDevice);
    }
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (emu_fails("cudaSetDevice")) return emu_fail(cudaErrorMemoryAllocation);
    return device == 0 ? cudaSuccess : emu_fail(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device != 0) return emu_fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "nostall emulated device (CPU)");
    p->totalGlobalMem = EMU_MEMORY;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = EMU_SMS;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int device) {
    if (emu_fails("cudaDeviceGetAttribute")) return emu_fail(cudaErrorMemoryAllocation);
    if (device != 0) return emu_fail(cudaErrorInvalidDevice);
    if (a != cudaDevAttrMultiProcessorCount) return emu_fail(cudaErrorInvalidValue);
    *v = EMU_SMS;
    return cudaSuccess;
}

// ---- memory: every allocation in a registry, with guard zones -----------------------
//
// [guard | payload (bytes) | guard]: the guards hold a pattern that must survive
// until the allocation is freed; a device payload starts as 0xff bytes (NaN floats),
// as garbage would on a GPU, so a kernel that reads what nobody wrote shows.

enum { GUARD = 256 };
static const unsigned char GUARD_BYTE = 0xa5;

struct allocation {
    size_t bytes;
    bool device;  // else page-locked host memory (cudaHostAlloc)
};
static std::mutex mem_lock;
static std::map<uintptr_t, allocation> allocations;  // by payload address
static size_t device_bytes_in_use;

static void check_guards(uintptr_t at, const allocation &a) {
    const unsigned char *p = (const unsigned char *)at;
    for (size_t i = 1; i <= GUARD; i++)
        if (p[-(ptrdiff_t)i] != GUARD_BYTE)
            emu_fatal("the %zu-byte %s buffer at %p was overwritten %zu bytes before its start",
                      a.bytes, a.device ? "device" : "pinned", (void *)at, i);
    for (size_t i = 0; i < GUARD; i++)
        if (p[a.bytes + i] != GUARD_BYTE)
            emu_fatal("the %zu-byte %s buffer at %p was overwritten %zu bytes past its end",
                      a.bytes, a.device ? "device" : "pinned", (void *)at, i);
}

static void check_all_guards(void) {
    std::lock_guard<std::mutex> hold(mem_lock);
    for (auto &kv : allocations) check_guards(kv.first, kv.second);
}

static void *guarded_alloc(size_t bytes, bool device) {
    void *mem = NULL;  // 256-byte aligned, as cudaMalloc's are
    if (posix_memalign(&mem, GUARD, bytes + 2 * GUARD) != 0) return NULL;
    unsigned char *base = (unsigned char *)mem;
    memset(base, GUARD_BYTE, GUARD);
    memset(base + GUARD, device ? 0xff : 0, bytes);
    memset(base + GUARD + bytes, GUARD_BYTE, GUARD);
    std::lock_guard<std::mutex> hold(mem_lock);
    allocations[(uintptr_t)(base + GUARD)] = allocation{bytes, device};
    if (device) device_bytes_in_use += bytes;
    return base + GUARD;
}

static cudaError_t guarded_free(void *p, bool device) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> hold(mem_lock);
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end() || it->second.device != device) return emu_fail(cudaErrorInvalidValue);
    check_guards(it->first, it->second);
    if (device) device_bytes_in_use -= it->second.bytes;
    allocations.erase(it);
    free((unsigned char *)p - GUARD);
    return cudaSuccess;
}

// The allocation that holds [p, p + bytes), or NULL; `device` says which kind it is.
static const allocation *holder(const void *p, size_t bytes, bool *device) {
    std::lock_guard<std::mutex> hold(mem_lock);
    auto it = allocations.upper_bound((uintptr_t)p);
    if (it == allocations.begin()) return NULL;
    --it;
    uintptr_t start = it->first, q = (uintptr_t)p;
    if (q < start || q + bytes > start + it->second.bytes) return NULL;
    *device = it->second.device;
    return &it->second;
}
bool emu_is_device_range(const void *p, size_t bytes) {
    bool device = false;
    return holder(p, bytes, &device) && device;
}
static bool is_pinned(const void *p, size_t bytes) {
    bool device = true;
    return holder(p, bytes, &device) && !device;
}
static bool straddles(const void *p, size_t bytes) {
    bool device;
    return holder(p, 1, &device) && !holder(p, bytes, &device);
}

// A kernel's pointer parameter must point into a device or pinned allocation (or
// to its end): host memory, freed memory or garbage would be an illegal address on
// a GPU, or a slow page fault at best.
bool emu_is_device_pointer(const void *p) {
    bool device;
    return holder(p, 0, &device) != NULL;
}


cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (emu_fails("cudaMalloc")) return emu_fail(cudaErrorMemoryAllocation);
    STICKY();
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        if (bytes > EMU_MEMORY - device_bytes_in_use) return emu_fail(cudaErrorMemoryAllocation);
    }
    *p = guarded_alloc(bytes, true);
    return *p ? cudaSuccess : emu_fail(cudaErrorMemoryAllocation);
}

// As on a GPU, freeing waits for the device first: work queued before may still use it.
cudaError_t cudaFree(void *p) {
    cudaError_t e = cudaDeviceSynchronize();  // also after a fault: nothing queued may still use p
    cudaError_t f = guarded_free(p, true);
    return e != cudaSuccess ? e : f;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags) {
    (void)flags;
    *p = guarded_alloc(bytes, false);
    return *p ? cudaSuccess : emu_fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *p) {
    cudaError_t e = cudaDeviceSynchronize();
    cudaError_t f = guarded_free(p, false);
    return e != cudaSuccess ? e : f;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p) {
    memset(a, 0, sizeof *a);
    bool device = false;
    if (holder(p, 0, &device)) {
        a->type = device ? cudaMemoryTypeDevice : cudaMemoryTypeHost;
        a->devicePointer = device ? (void *)p : NULL;
        a->hostPointer = device ? NULL : (void *)p;
    }
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    std::lock_guard<std::mutex> hold(mem_lock);
    *free_bytes = EMU_MEMORY - device_bytes_in_use;
    *total_bytes = EMU_MEMORY;
    return cudaSuccess;
}

// ---- streams: a worker thread each, running its queue in order ----------------------

struct emu_stream {
    std::mutex lock;
    std::condition_variable changed;
    std::deque<std::function<void()>> queue;
    bool busy = false, stop = false;
    std::thread worker;
};
static std::mutex streams_lock;
static std::vector<emu_stream *> streams;

static void stream_main(emu_stream *s) {
    std::unique_lock<std::mutex> hold(s->lock);
    for (;;) {
        s->changed.wait(hold, [s] { return s->stop || !s->queue.empty(); });
        if (s->queue.empty()) return;  // stopping, and nothing left
        std::function<void()> op = std::move(s->queue.front());
        s->queue.pop_front();
        s->busy = true;
        hold.unlock();
        op();
        hold.lock();
        s->busy = false;
        s->changed.notify_all();
    }
}

cudaError_t emu_enqueue(cudaStream_t s, std::function<void()> op) {
    if (!s) return emu_fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> hold(s->lock);
    s->queue.push_back(std::move(op));
    s->changed.notify_all();
    return cudaSuccess;
}

static void drain(cudaStream_t s) {
    std::unique_lock<std::mutex> hold(s->lock);
    s->changed.wait(hold, [s] { return s->queue.empty() && !s->busy; });
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *out, unsigned flags) {
    if (emu_fails("cudaStreamCreateWithFlags")) return emu_fail(cudaErrorMemoryAllocation);
    (void)flags;  // every emulated stream is non-blocking: none orders against stream 0
    emu_catch_faults();
    emu_stream *s = new emu_stream;
    s->worker = std::thread(stream_main, s);
    std::lock_guard<std::mutex> hold(streams_lock);
    streams.push_back(s);
    *out = s;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return emu_fail(cudaErrorInvalidResourceHandle);
    drain(s);
    {
        std::lock_guard<std::mutex> hold(s->lock);
        s->stop = true;
        s->changed.notify_all();
    }
    s->worker.join();
    {
        std::lock_guard<std::mutex> hold(streams_lock);
        for (size_t i = 0; i < streams.size(); i++)
            if (streams[i] == s) streams.erase(streams.begin() + (ptrdiff_t)i);
    }
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (!s) return emu_fail(cudaErrorInvalidResourceHandle);
    drain(s);
    check_all_guards();
    STICKY();
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s) {
    STICKY();
    if (!s) return emu_fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> hold(s->lock);
    return s->queue.empty() && !s->busy ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaDeviceSynchronize(void) {
    std::vector<emu_stream *> all;
    {
        std::lock_guard<std::mutex> hold(streams_lock);
        all = streams;
    }
    for (emu_stream *s : all) drain(s);
    check_all_guards();
    STICKY();
    return cudaSuccess;
}

// ---- copies ------------------------------------------------------------------------

static void late_dma(void) {
    emu_count(EMU_COPIES);
    unsigned us = copy_delay_us.load();
    if (us) usleep(us);
}

// As CUDA: a pageable source is staged before the call returns, so the caller may
// reuse it at once; a page-locked one is read when the stream gets to the copy; a
// pageable destination makes the call wait for the copy.
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k,
                            cudaStream_t s) {
    STICKY();
    if (!s) return emu_fail(cudaErrorInvalidResourceHandle);
    if (bytes == 0) return cudaSuccess;
    bool dst_dev = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    bool src_dev = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    if (k == cudaMemcpyHostToHost || (dst_dev && !emu_is_device_range(dst, bytes)) ||
        (src_dev && !emu_is_device_range(src, bytes)) || (!dst_dev && emu_is_device_range(dst, 1)) ||
        (!src_dev && emu_is_device_range(src, 1)))
        return emu_fail(cudaErrorInvalidValue);  // a pointer on the wrong side, or past the end
    if ((!src_dev && straddles(src, bytes)) || (!dst_dev && straddles(dst, bytes)))
        return emu_fail(cudaErrorInvalidValue);  // starts in a pinned buffer, runs past its end
    if (!src_dev && !is_pinned(src, bytes)) {
        std::shared_ptr<std::vector<unsigned char>> staged(
            new std::vector<unsigned char>((const unsigned char *)src,
                                           (const unsigned char *)src + bytes));
        return emu_enqueue(s, [=] {
            if (emu_broken()) return;
            late_dma();
            memcpy(dst, staged->data(), bytes);
        });
    }
    cudaError_t e = emu_enqueue(s, [=] {
        if (emu_broken()) return;
        late_dma();
        memcpy(dst, src, bytes);
    });
    if (e == cudaSuccess && !dst_dev && !is_pinned(dst, bytes)) drain(s);
    return e;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
    STICKY();
    if (!s) return emu_fail(cudaErrorInvalidResourceHandle);
    if (bytes == 0) return cudaSuccess;
    if (!emu_is_device_range(p, bytes)) return emu_fail(cudaErrorInvalidValue);
    return emu_enqueue(s, [=] {
        if (!emu_broken()) memset(p, value, bytes);
    });
}

// ---- events ------------------------------------------------------------------------
// Each cudaEventRecord makes a record of its own, which its stream completes when it
// gets there; the event points at its latest record. A query, a host wait or a
// stream wait is about the record the event pointed at when it was called, as in
// CUDA, whatever is recorded later, and on whichever stream. Records are shared
// with the queued work, so destroying an event with work pending is safe. One lock
// and one condition variable serve every record: events are few and cheap here.

struct event_record {
    bool done = false;
    uint64_t at_ns = 0;  // when its stream reached it
};
typedef std::shared_ptr<event_record> record_ptr;

struct emu_event {
    record_ptr last;  // NULL: never recorded (complete, as in CUDA)
};
static std::mutex events_lock;
static std::condition_variable record_reached;

static record_ptr last_record(cudaEvent_t e) {
    std::lock_guard<std::mutex> hold(events_lock);
    return e->last;
}

static void wait_for(const record_ptr &r) {
    if (!r) return;
    std::unique_lock<std::mutex> hold(events_lock);
    record_reached.wait(hold, [&r] { return r->done; });
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    *e = new emu_event;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (!e) return emu_fail(cudaErrorInvalidResourceHandle);
    delete e;  // pending records live on in the work that completes them
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    STICKY();
    if (!e || !s) return emu_fail(cudaErrorInvalidResourceHandle);
    record_ptr r = std::make_shared<event_record>();
    {
        std::lock_guard<std::mutex> hold(events_lock);
        e->last = r;
    }
    return emu_enqueue(s, [r] {
        std::lock_guard<std::mutex> hold(events_lock);
        r->done = true;
        r->at_ns = now_ns();
        record_reached.notify_all();
    });
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
    STICKY();
    if (!e) return emu_fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> hold(events_lock);
    return !e->last || e->last->done ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    STICKY();
    if (!e) return emu_fail(cudaErrorInvalidResourceHandle);
    wait_for(last_record(e));
    STICKY();
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    STICKY();
    (void)flags;
    if (!e || !s) return emu_fail(cudaErrorInvalidResourceHandle);
    record_ptr r = last_record(e);
    return emu_enqueue(s, [r] { wait_for(r); });
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start || !end) return emu_fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> hold(events_lock);
    if (!start->last || !end->last) return emu_fail(cudaErrorInvalidResourceHandle);
    if (!start->last->done || !end->last->done) return emu_fail(cudaErrorNotReady);
    *ms = (float)((double)((int64_t)end->last->at_ns - (int64_t)start->last->at_ns) / 1e6);
    return cudaSuccess;
}

// ==== failure injection and live objects (tests of cleanup paths) ====================
// emu_fail_call picks one future call of one API to fail; the API functions that
// can fail start with `if (emu_fails("name")) return <error>;`. Streams, cuBLAS
// handles and device memory alive are read from their registries and counts.
static std::mutex inject_lock;
static std::string inject_api;  // empty: nothing pending
static int inject_left;         // calls of inject_api to let through before the failure

extern "C" void emu_fail_call(const char *api, int after) {
    std::lock_guard<std::mutex> hold(inject_lock);
    inject_api = api ? api : "";
    inject_left = after > 0 ? after : 0;
}

extern "C" int emu_fails(const char *api) {
    std::lock_guard<std::mutex> hold(inject_lock);
    if (!inject_api.empty() && inject_api == api && inject_left-- == 0) {
        inject_api.clear();
        return 1;
    }
    return 0;
}

extern "C" void emu_live_objects(int *n_streams, int *blas_handles, size_t *device_bytes) {
    if (n_streams) {
        std::lock_guard<std::mutex> hold(streams_lock);
        *n_streams = (int)streams.size();
    }
    if (blas_handles) *blas_handles = emu_live_blas.load();
    if (device_bytes) {
        std::lock_guard<std::mutex> hold(mem_lock);
        *device_bytes = device_bytes_in_use;
    }
}
// ==== end of failure injection and live objects ======================================
