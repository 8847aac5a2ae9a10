// emu.cpp — the emulated CUDA device: memory, streams, events, launches, the fibers
// that run a block's threads, and the reference GEMM behind cublasSgemm. Tests only;
// cuda_runtime.h here says what it emulates and why.
//
// Reading order: memory (a registry of allocations with guard zones), streams (a
// worker thread and its queue), events, launches and the block scheduler, cuBLAS.
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"

#if defined(__SANITIZE_THREAD__)
#define EMU_TSAN 1
#include <sanitizer/tsan_interface.h>
#else
#define EMU_TSAN 0
#endif

// A broken invariant of the device (a guard zone overwritten, a barrier nobody can
// pass): the kernel has a bug, and stopping here with the reason is the test's
// failure. Errors a real GPU returns as codes are returned as codes instead.
[[noreturn]] static void emu_fatal(const char *fmt, ...) {
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

static std::mutex settings_lock;
static bool settings_read;
static enum emu_order order_setting = EMU_FORWARD;
static unsigned copy_delay_us;
static struct emu_counts counts;

static void read_settings(void) {  // under settings_lock
    if (settings_read) return;
    settings_read = true;
    const char *o = getenv("NS_EMU_ORDER");
    if (!o || !*o) return;
    for (int i = EMU_FORWARD; i <= EMU_INTERLEAVED; i++)
        if (strcmp(o, emu_order_name((enum emu_order)i)) == 0) order_setting = (enum emu_order)i;
}

extern "C" const char *emu_order_name(enum emu_order o) {
    return o == EMU_REVERSED ? "reversed" : o == EMU_INTERLEAVED ? "interleaved" : "forward";
}
extern "C" void emu_set_order(enum emu_order o) {
    std::lock_guard<std::mutex> hold(settings_lock);
    settings_read = true;
    order_setting = o;
}
extern "C" enum emu_order emu_get_order(void) {
    std::lock_guard<std::mutex> hold(settings_lock);
    read_settings();
    return order_setting;
}
extern "C" void emu_set_copy_delay_us(unsigned us) {
    std::lock_guard<std::mutex> hold(settings_lock);
    copy_delay_us = us;
}
extern "C" struct emu_counts emu_get_counts(void) {
    std::lock_guard<std::mutex> hold(settings_lock);
    return counts;
}
static void count(uint64_t emu_counts::*field) {
    std::lock_guard<std::mutex> hold(settings_lock);
    counts.*field += 1;
}

// ---- errors -----------------------------------------------------------------------

static thread_local cudaError_t last_error = cudaSuccess;
// A kernel that touched memory it can't (SIGSEGV or SIGBUS inside a kernel) breaks
// the context for good, as on a GPU: every later call returns the error.
static std::atomic<int> sticky{cudaSuccess};

static cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

cudaError_t cudaGetLastError(void) {
    if (sticky.load() != cudaSuccess) return (cudaError_t)sticky.load();
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
// After a fault the device runs nothing more (event records still complete, so no
// waiter hangs), as a broken GPU context does.
static bool broken(void) { return sticky.load() != cudaSuccess; }
#define STICKY() \
    do { \
        if (sticky.load() != cudaSuccess) return fail((cudaError_t)sticky.load()); \
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
        return fail(cudaErrorNoDevice);
    }
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (emu_fails("cudaSetDevice")) return fail(cudaErrorMemoryAllocation);
    return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device != 0) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "nostall emulated device (CPU)");
    p->totalGlobalMem = EMU_MEMORY;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = EMU_SMS;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int device) {
    if (emu_fails("cudaDeviceGetAttribute")) return fail(cudaErrorMemoryAllocation);
    if (device != 0) return fail(cudaErrorInvalidDevice);
    if (a != cudaDevAttrMultiProcessorCount) return fail(cudaErrorInvalidValue);
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
    if (it == allocations.end() || it->second.device != device) return fail(cudaErrorInvalidValue);
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
static bool is_device_range(const void *p, size_t bytes) {
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
    if (emu_fails("cudaMalloc")) return fail(cudaErrorMemoryAllocation);
    STICKY();
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        if (bytes > EMU_MEMORY - device_bytes_in_use) return fail(cudaErrorMemoryAllocation);
    }
    *p = guarded_alloc(bytes, true);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
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
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
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

static void catch_faults(void);

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

static cudaError_t enqueue(cudaStream_t s, std::function<void()> op) {
    if (!s) return fail(cudaErrorInvalidResourceHandle);
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
    if (emu_fails("cudaStreamCreateWithFlags")) return fail(cudaErrorMemoryAllocation);
    (void)flags;  // every emulated stream is non-blocking: none orders against stream 0
    catch_faults();
    emu_stream *s = new emu_stream;
    s->worker = std::thread(stream_main, s);
    std::lock_guard<std::mutex> hold(streams_lock);
    streams.push_back(s);
    *out = s;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return fail(cudaErrorInvalidResourceHandle);
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
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    drain(s);
    check_all_guards();
    STICKY();
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s) {
    STICKY();
    if (!s) return fail(cudaErrorInvalidResourceHandle);
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
    unsigned us;
    {
        std::lock_guard<std::mutex> hold(settings_lock);
        us = copy_delay_us;
        counts.copies++;
    }
    if (us) usleep(us);
}

// As CUDA: a pageable source is staged before the call returns, so the caller may
// reuse it at once; a page-locked one is read when the stream gets to the copy; a
// pageable destination makes the call wait for the copy.
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k,
                            cudaStream_t s) {
    STICKY();
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (bytes == 0) return cudaSuccess;
    bool dst_dev = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    bool src_dev = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    if (k == cudaMemcpyHostToHost || (dst_dev && !is_device_range(dst, bytes)) ||
        (src_dev && !is_device_range(src, bytes)) || (!dst_dev && is_device_range(dst, 1)) ||
        (!src_dev && is_device_range(src, 1)))
        return fail(cudaErrorInvalidValue);  // a pointer on the wrong side, or past the end
    if ((!src_dev && straddles(src, bytes)) || (!dst_dev && straddles(dst, bytes)))
        return fail(cudaErrorInvalidValue);  // starts in a pinned buffer, runs past its end
    if (!src_dev && !is_pinned(src, bytes)) {
        std::shared_ptr<std::vector<unsigned char>> staged(
            new std::vector<unsigned char>((const unsigned char *)src,
                                           (const unsigned char *)src + bytes));
        return enqueue(s, [=] {
            if (broken()) return;
            late_dma();
            memcpy(dst, staged->data(), bytes);
        });
    }
    cudaError_t e = enqueue(s, [=] {
        if (broken()) return;
        late_dma();
        memcpy(dst, src, bytes);
    });
    if (e == cudaSuccess && !dst_dev && !is_pinned(dst, bytes)) drain(s);
    return e;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
    STICKY();
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    if (bytes == 0) return cudaSuccess;
    if (!is_device_range(p, bytes)) return fail(cudaErrorInvalidValue);
    return enqueue(s, [=] {
        if (!broken()) memset(p, value, bytes);
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
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    delete e;  // pending records live on in the work that completes them
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    STICKY();
    if (!e || !s) return fail(cudaErrorInvalidResourceHandle);
    record_ptr r = std::make_shared<event_record>();
    {
        std::lock_guard<std::mutex> hold(events_lock);
        e->last = r;
    }
    return enqueue(s, [r] {
        std::lock_guard<std::mutex> hold(events_lock);
        r->done = true;
        r->at_ns = now_ns();
        record_reached.notify_all();
    });
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
    STICKY();
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> hold(events_lock);
    return !e->last || e->last->done ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    STICKY();
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    wait_for(last_record(e));
    STICKY();
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    STICKY();
    (void)flags;
    if (!e || !s) return fail(cudaErrorInvalidResourceHandle);
    record_ptr r = last_record(e);
    return enqueue(s, [r] { wait_for(r); });
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start || !end) return fail(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> hold(events_lock);
    if (!start->last || !end->last) return fail(cudaErrorInvalidResourceHandle);
    if (!start->last->done || !end->last->done) return fail(cudaErrorNotReady);
    *ms = (float)((double)((int64_t)end->last->at_ns - (int64_t)start->last->at_ns) / 1e6);
    return cudaSuccess;
}

// ---- launches: blocks of fibers --------------------------------------------------------
//
// A block's threads are fibers (ucontext) on the stream's worker thread. The block
// scheduler resumes each runnable thread, in the order of the setting, until it
// finishes, reaches __syncthreads, or reaches a warp shuffle; a barrier opens when
// every live thread of the block has reached it, a shuffle step when every live lane
// of the warp has. When a kernel's first block finishes without any thread stopping
// at either, its other blocks run their threads as plain calls, which is much faster;
// a thread that then reaches a barrier is a fatal error (the kernel's barriers would
// depend on the block).

thread_local const emu_thread_ctx *emu_cur;

enum fiber_state { F_RUN, F_BARRIER, F_WARP, F_DONE };
enum { STACK_BYTES = EMU_TSAN ? 1 << 18 : 1 << 16, MAX_THREADS = 1024 };

struct fiber {
    ucontext_t ctx;
    void *stack = NULL;
    void *tsan = NULL;
    enum fiber_state state = F_DONE;
    unsigned shuffles = 0;  // warp exchanges this thread has made
    emu_thread_ctx tc;
};

struct warp_step {
    int arrived = 0;
    uint64_t value[2][32];  // by the parity of the lane's shuffle count: see emu_warp_exchange
    unsigned stamp[2][32];  // which of its exchanges the lane wrote there (+1; 0: none)
};

struct block_run {  // one block being run on this worker thread
    const std::function<void()> *body;
    const char *kernel;
    unsigned threads;
    bool fibered;
    bool stopped;  // some thread stopped at a barrier or shuffle
    fiber *current;
    ucontext_t scheduler;
    void *scheduler_tsan;
};
static thread_local fiber *fibers;  // MAX_THREADS of them, made on first use
static thread_local block_run *run;

static void yield_to_scheduler(void) {
    fiber *f = run->current;
#if EMU_TSAN
    __tsan_switch_to_fiber(run->scheduler_tsan, 0);
#endif
    if (swapcontext(&f->ctx, &run->scheduler) != 0) emu_fatal("swapcontext failed");
}

static void fiber_main(void) {
    (*run->body)();
    run->current->state = F_DONE;
    yield_to_scheduler();
    emu_fatal("a finished thread was resumed");
}

static void resume(fiber *f) {
    run->current = f;
    emu_cur = &f->tc;
#if EMU_TSAN
    __tsan_switch_to_fiber(f->tsan, 0);
#endif
    if (swapcontext(&run->scheduler, &f->ctx) != 0) emu_fatal("swapcontext failed");
}

static void make_fibers(void) {
    fibers = new fiber[MAX_THREADS];
    for (int i = 0; i < MAX_THREADS; i++) {
        fibers[i].stack = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (fibers[i].stack == MAP_FAILED) emu_fatal("no memory for fiber stacks");
        // the lowest page catches a stack overflow instead of the neighbour's frames
        if (mprotect(fibers[i].stack, 4096, PROT_NONE) != 0) emu_fatal("mprotect of a fiber stack failed");
#if EMU_TSAN
        fibers[i].tsan = __tsan_create_fiber(0);
#endif
    }
}

static std::vector<unsigned> thread_order(unsigned n, enum emu_order o) {
    std::vector<unsigned> ord(n);
    for (unsigned i = 0; i < n; i++) ord[i] = o == EMU_REVERSED ? n - 1 - i : i;
    if (o == EMU_INTERLEAVED) {  // lane 0 of every warp, then lane 1 of every warp, ...
        unsigned warps = (n + 31) / 32, k = 0;
        for (unsigned lane = 0; lane < 32; lane++)
            for (unsigned w = 0; w < warps; w++)
                if (w * 32 + lane < n) ord[k++] = w * 32 + lane;
    }
    return ord;
}

static thread_local warp_step warps[MAX_THREADS / 32];

static void lanes_reached(unsigned warp) {  // releases the warp when every live lane is in
    unsigned first = warp * 32, last = first + 32 < run->threads ? first + 32 : run->threads;
    int live = 0;
    for (unsigned t = first; t < last; t++) live += fibers[t].state != F_DONE;
    if (warps[warp].arrived < live || warps[warp].arrived == 0) return;
    warps[warp].arrived = 0;
    for (unsigned t = first; t < last; t++)
        if (fibers[t].state == F_WARP) fibers[t].state = F_RUN;
}

static void warp_step_wait(void) {
    if (!run || !run->fibered)
        emu_fatal("kernel %s: a thread reached a warp shuffle in a block run without fibers "
                  "(its first block had no barrier or shuffle)", run ? run->kernel : "?");
    fiber *f = run->current;
    unsigned warp = (unsigned)(f - fibers) / 32;  // warps are by linear thread index
    run->stopped = true;
    f->state = F_WARP;
    warps[warp].arrived++;
    lanes_reached(warp);
    yield_to_scheduler();
}

void emu_check_mask(unsigned mask, const char *what) {
    if (mask != 0xffffffffu) emu_fatal("%s with mask %#x: only full warps are emulated", what, mask);
}

// One step of the warp: every lane writes, waits for the others, reads. The values
// alternate between two buffers, so no second wait is needed before the next
// exchange overwrites: a lane can write exchange k+2's values only after every lane
// reached exchange k+1, which each does after reading exchange k.
unsigned emu_lane(void) {
    if (!run || !run->fibered) warp_step_wait();  // says why and stops
    return (unsigned)(run->current - fibers) % 32;
}

uint64_t emu_warp_exchange(uint64_t mine, int src_lane) {
    if (!run || !run->fibered) warp_step_wait();  // says why and stops
    fiber *f = run->current;
    unsigned t = (unsigned)(f - fibers), warp = t / 32, src = warp * 32 + (unsigned)src_lane;
    unsigned k = f->shuffles++, b = k & 1;
    warps[warp].value[b][t % 32] = mine;
    warps[warp].stamp[b][t % 32] = k + 1;
    warp_step_wait();  // every live lane has written
    // the source lane took part in this very exchange (it may have gone on since)
    if (src >= run->threads || warps[warp].stamp[b][src_lane] != k + 1)
        emu_fatal("kernel %s: thread %u reads lane %d of its warp, which %s", run->kernel, t,
                  src_lane, src >= run->threads ? "the block doesn't have" : "has exited");
    return warps[warp].value[b][src_lane];
}

void __syncthreads(void) {
    if (!run || !run->fibered)
        emu_fatal("kernel %s: a thread reached __syncthreads in a block run without fibers "
                  "(its first block had no barrier)", run ? run->kernel : "?");
    count(&emu_counts::barriers);
    run->stopped = true;
    run->current->state = F_BARRIER;
    yield_to_scheduler();
}

static void describe_deadlock(void) {
    int at_barrier = 0, at_warp = 0;
    for (unsigned t = 0; t < run->threads; t++) {
        at_barrier += fibers[t].state == F_BARRIER;
        at_warp += fibers[t].state == F_WARP;
    }
    emu_fatal("kernel %s, block (%u,%u,%u): no thread can go on: %d wait at __syncthreads, "
              "%d at a warp shuffle whose warp has lanes at the barrier (a barrier or shuffle "
              "some threads of the block skip)",
              run->kernel, fibers[0].tc.block_idx.x, fibers[0].tc.block_idx.y,
              fibers[0].tc.block_idx.z, at_barrier, at_warp);
}

// A fresh context on the fiber's own stack, to start at fiber_main when resumed.
__attribute__((noinline)) static void start_fiber(fiber *f) {
    if (getcontext(&f->ctx) != 0) emu_fatal("getcontext failed");
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = STACK_BYTES;
    f->ctx.uc_link = NULL;
    makecontext(&f->ctx, fiber_main, 0);
    f->state = F_RUN;
    f->shuffles = 0;
}

static void run_block_fibered(const std::vector<unsigned> &ord) {
    for (unsigned t = 0; t < run->threads; t++) start_fiber(&fibers[t]);
    for (unsigned w = 0; w < (run->threads + 31) / 32; w++) {
        warps[w].arrived = 0;
        memset(warps[w].stamp, 0, sizeof warps[w].stamp);
    }
    for (;;) {
        bool ran = false;
        for (unsigned t : ord)
            if (fibers[t].state == F_RUN) {
                ran = true;
                resume(&fibers[t]);
                if (fibers[t].state == F_DONE) lanes_reached(t / 32);
            }
        unsigned live = 0, at_barrier = 0;
        for (unsigned t = 0; t < run->threads; t++) {
            live += fibers[t].state != F_DONE;
            at_barrier += fibers[t].state == F_BARRIER;
        }
        if (live == 0) return;
        if (at_barrier == live) {  // the barrier opens
            for (unsigned t = 0; t < run->threads; t++)
                if (fibers[t].state == F_BARRIER) fibers[t].state = F_RUN;
            continue;
        }
        if (!ran) describe_deadlock();
    }
}

// ---- faults: a kernel's SIGSEGV or SIGBUS becomes cudaErrorIllegalAddress ------------
static thread_local sigjmp_buf *in_kernel;  // where the worker's current kernel started
static struct sigaction host_segv, host_bus;

static void on_fault(int sig, siginfo_t *info, void *uc) {
    if (in_kernel) siglongjmp(*in_kernel, sig);
    // not inside a kernel: the host's own crash, handled as it was before
    struct sigaction *old = sig == SIGSEGV ? &host_segv : &host_bus;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, info, uc);
        return;
    }
    sigaction(sig, old, NULL);
    raise(sig);
}

static void catch_faults(void) {  // once, at the first stream
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &host_segv);
        sigaction(SIGBUS, &sa, &host_bus);
    });
}

static void run_kernel(const char *name, dim3 grid, dim3 block,
                       const std::function<void()> &body);

// Runs a kernel; a fault inside it abandons the kernel (and its fibers) and makes
// the context's error sticky. Each worker has an alternate signal stack, so a fault
// on a fiber's small stack still has room for the handler.
static void run_kernel_guarded(const char *name, dim3 grid, dim3 block,
                               const std::function<void()> &body) {
    static thread_local void *alt_stack;
    if (!alt_stack) {
        alt_stack = malloc(1 << 16);
        stack_t ss;
        ss.ss_sp = alt_stack;
        ss.ss_size = 1 << 16;
        ss.ss_flags = 0;
        sigaltstack(&ss, NULL);
    }
    if (sticky.load() != cudaSuccess) return;  // a broken context runs nothing more
    sigjmp_buf here;
    if (sigsetjmp(here, 1) == 0) {
        in_kernel = &here;
        run_kernel(name, grid, block, body);
        in_kernel = NULL;
        return;
    }
    in_kernel = NULL;
    run = NULL;
    emu_cur = NULL;
    fprintf(stderr, "emulated CUDA device: kernel %s touched memory it can't (a fault); "
            "the context is broken from now on, as on a GPU\n", name);
    int none = cudaSuccess;
    sticky.compare_exchange_strong(none, cudaErrorIllegalAddress);
}

static void run_kernel(const char *name, dim3 grid, dim3 block,
                       const std::function<void()> &body) {
    if (!fibers) make_fibers();
    enum emu_order o = emu_get_order();
    unsigned threads = block.x * block.y * block.z;
    std::vector<unsigned> ord = thread_order(threads, o);
    size_t nblocks = (size_t)grid.x * grid.y * grid.z;
    block_run br;
    br.body = &body;
    br.kernel = name;
    br.threads = threads;
    br.fibered = true;
    br.current = NULL;
#if EMU_TSAN
    br.scheduler_tsan = __tsan_get_current_fiber();
#endif
    run = &br;
    for (size_t i = 0; i < nblocks; i++) {
        size_t b = o == EMU_REVERSED ? nblocks - 1 - i : i;
        uint3 bi = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                    (unsigned)(b / ((size_t)grid.x * grid.y))};
        for (unsigned t = 0; t < threads; t++) {
            fiber *f = &fibers[t];
            f->tc.thread_idx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
            f->tc.block_idx = bi;
            f->tc.block_dim = block;
            f->tc.grid_dim = grid;
        }
        if (br.fibered) {
            br.stopped = false;
            run_block_fibered(ord);
            count(&emu_counts::fibered_blocks);
            if (!br.stopped) br.fibered = false;  // no barrier, no shuffle: plain calls from now
        } else {
            for (unsigned t : ord) {
                br.current = &fibers[t];
                emu_cur = &fibers[t].tc;
                body();
            }
        }
    }
    run = NULL;
    emu_cur = NULL;
}

// A launch whose parameter `param` points outside every allocation: on a GPU the
// kernel faults when it runs; here it faults without running.
void emu_enqueue_fault(const char *name, cudaStream_t s, int param) {
    if (!s) {
        fail(cudaErrorInvalidResourceHandle);
        return;
    }
    count(&emu_counts::launches);
    enqueue(s, [name, param] {
        fprintf(stderr, "emulated CUDA device: kernel %s: parameter %d points outside every device "
                "and pinned allocation (host memory, freed memory or garbage); the context is broken "
                "from now on, as on a GPU\n", name, param + 1);
        int none = cudaSuccess;
        sticky.compare_exchange_strong(none, cudaErrorIllegalAddress);
    });
}

void emu_enqueue_kernel(const char *name, dim3 grid, dim3 block, cudaStream_t s,
                        std::function<void()> body) {
    unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > MAX_THREADS || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535) {
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    if (!s) {
        fail(cudaErrorInvalidResourceHandle);
        return;
    }
    count(&emu_counts::launches);
    enqueue(s, [name, grid, block, body] { run_kernel_guarded(name, grid, block, body); });
}

// ---- cuBLAS: a reference GEMM on the handle's stream ------------------------------------

struct emu_blas {
    cudaStream_t stream = NULL;
    bool tf32 = false;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    if (emu_fails("cublasCreate")) return CUBLAS_STATUS_ALLOC_FAILED;
    *h = new emu_blas;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h || emu_fails("cublasDestroy")) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (emu_fails("cublasSetStream")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    if (emu_fails("cublasSetMathMode")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->tf32 = mode == CUBLAS_TF32_TENSOR_OP_MATH;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}
const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_INVALID_VALUE
               ? "an invalid value was used as an argument (emulated cuBLAS: sizes, leading "
                 "dimensions, or a matrix outside its device buffer)"
               : cublasGetStatusName(s);
}

// float rounded to TF32: 10 mantissa bits, to nearest, ties to even
static float tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

// A column-major (rows, cols) matrix with leading dimension ld lies in one buffer.
static bool matrix_ok(const float *p, int rows, int cols, int ld) {
    if (ld < (rows > 1 ? rows : 1)) return false;
    if (rows == 0 || cols == 0) return true;
    return is_device_range(p, ((size_t)ld * (size_t)(cols - 1) + (size_t)rows) * sizeof(float));
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *a, int lda,
                           const float *b, int ldb, const float *beta, float *c, int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    bool at = ta == CUBLAS_OP_T, bt = tb == CUBLAS_OP_T;
    float al = *alpha, be = *beta;  // host pointers, read at the call as cuBLAS does
    if ((k > 0 && (!matrix_ok(a, at ? k : m, at ? m : k, lda) ||
                   !matrix_ok(b, bt ? n : k, bt ? k : n, ldb))) ||
        !matrix_ok(c, m, n, ldc))
        return CUBLAS_STATUS_INVALID_VALUE;
    bool round = h->tf32;
    cudaError_t e = enqueue(h->stream, [=] {
        if (broken()) return;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double sum = 0;
                for (int p = 0; p < k; p++) {
                    float x = at ? a[p + (size_t)i * lda] : a[i + (size_t)p * lda];
                    float y = bt ? b[j + (size_t)p * ldb] : b[p + (size_t)j * ldb];
                    sum += round ? (double)tf32(x) * tf32(y) : (double)x * y;
                }
                float *out = &c[i + (size_t)j * ldc];
                *out = (float)(al * sum + (be == 0.0f ? 0.0 : (double)be * *out));
            }
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

// ==== failure injection and live objects (tests of cleanup paths) ====================
// emu_fail_call picks one future call of one API to fail; the API functions that
// can fail start with `if (emu_fails("name")) return <error>;`. Every call that
// isn't failed is counted by name, so that cuBLAS handles alive are the creates
// minus the destroys. Streams and device memory are read from their registries above.
#include <string>

static std::mutex inject_lock;
static std::string inject_api;  // empty: nothing pending
static int inject_left;         // calls of inject_api to let through before the failure
static std::map<std::string, uint64_t> calls_made;

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
    calls_made[api]++;
    return 0;
}

extern "C" void emu_live_objects(int *n_streams, int *blas_handles, size_t *device_bytes) {
    if (n_streams) {
        std::lock_guard<std::mutex> hold(streams_lock);
        *n_streams = (int)streams.size();
    }
    if (blas_handles) {
        std::lock_guard<std::mutex> hold(inject_lock);
        *blas_handles = (int)(calls_made["cublasCreate"] - calls_made["cublasDestroy"]);
    }
    if (device_bytes) {
        std::lock_guard<std::mutex> hold(mem_lock);
        *device_bytes = device_bytes_in_use;
    }
}
// ==== end of failure injection and live objects ======================================
