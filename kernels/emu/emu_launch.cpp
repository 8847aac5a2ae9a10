// emu_launch.cpp — launches on the emulated device: a block's threads as fibers,
// __syncthreads and warp shuffles between them, the order they run in, and a
// kernel's fault turned into a broken context. Tests only (see cuda_runtime.h here).
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <mutex>
#include <vector>

#include "emu_internal.h"
#if EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

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
    emu_count(EMU_BARRIERS);
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

void emu_catch_faults(void) {  // once, at the first stream
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
// the context's error emu_sticky. Each worker has an alternate signal stack, so a fault
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
    if (emu_sticky.load() != cudaSuccess) return;  // a broken context runs nothing more
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
    emu_sticky.compare_exchange_strong(none, cudaErrorIllegalAddress);
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
            emu_count(EMU_FIBERED_BLOCKS);
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
        emu_fail(cudaErrorInvalidResourceHandle);
        return;
    }
    emu_count(EMU_LAUNCHES);
    emu_enqueue(s, [name, param] {
        fprintf(stderr, "emulated CUDA device: kernel %s: parameter %d points outside every device "
                "and pinned allocation (host memory, freed memory or garbage); the context is broken "
                "from now on, as on a GPU\n", name, param + 1);
        int none = cudaSuccess;
        emu_sticky.compare_exchange_strong(none, cudaErrorIllegalAddress);
    });
}

void emu_enqueue_kernel(const char *name, dim3 grid, dim3 block, cudaStream_t s,
                        std::function<void()> body) {
    unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > MAX_THREADS || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535) {
        emu_fail(cudaErrorInvalidConfiguration);
        return;
    }
    if (!s) {
        emu_fail(cudaErrorInvalidResourceHandle);
        return;
    }
    emu_count(EMU_LAUNCHES);
    emu_enqueue(s, [name, grid, block, body] { run_kernel_guarded(name, grid, block, body); });
}

