# nostall — one build for CPU and (when nvcc is present) CUDA.
#   make            build the library, ./train, ./bench, ./prepare, ./export
#   make test       install what is missing, build, run every Criterion suite
#   make run        install, build, prepare Fashion-MNIST, train configs/resnet_small.cfg
#   make bench      the benchmarks (not part of the tests)
#   make CUDA=0     build without the CUDA backend (CUDA=auto|0|1|emu, default auto)
#   make CUDA=emu BUILD=build/emu   the CUDA tables on the emulated device (kernels/emu/),
#                   for test_cuda on machines without a GPU; make test runs it

CC      ?= gcc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -Iinclude -Ikernels \
           $(shell pkg-config --cflags stb 2>/dev/null)
LDLIBS  += -lopenblas $(shell pkg-config --libs stb 2>/dev/null || echo -lstb) -lz -lm -lpthread -lprotobuf-c
LDFLAGS += -fopenmp
BUILD   := build
# Generated code (the ONNX exporter's protobuf messages): $(BUILD)/gen, on the include path.
GEN     = $(BUILD)/gen
CFLAGS  += -I$(GEN)

# --- CUDA detection: CUDA=auto uses nvcc when it is on PATH or in /usr/local/cuda.
CUDA  ?= auto
CUDNN ?= 1
NVCC  ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(CUDA),auto)
  CUDA := $(if $(NVCC),1,0)
endif
ifeq ($(CUDA),1)
  ifeq ($(NVCC),)
    $(error CUDA=1 but nvcc was not found; install the CUDA toolkit or build with CUDA=0)
  endif
  CUDA_HOME := $(patsubst %/bin/nvcc,%,$(NVCC))
  # Every .cu is compiled: the cuDNN convolution file is empty without NS_HAVE_CUDNN,
  # and the im2col one, cuDNN's fallback, then holds the convolution entries itself,
  # so CUDNN=0 needs no other change than the flags and -lcudnn.
  CUDA_SRC  := $(wildcard kernels/cuda/*.cu)
  CUDA_OBJ  := $(CUDA_SRC:%.cu=$(BUILD)/%.o)
  # -lineinfo: compute-sanitizer and Nsight name source lines, at no cost in speed.
  NVCCFLAGS ?= -O2 -g -lineinfo
  NVCCFLAGS += -std=c++17 -Iinclude -Ikernels -DNS_HAVE_CUDA=1 -DNS_HAVE_CUDNN=$(CUDNN) \
               -Xcompiler -Wall,-Wextra,-Werror -Werror all-warnings \
               -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -gencode arch=compute_90,code=compute_90
  # NCCL (data parallel on GPUs) when its header sits in the toolkit, as on these machines
  NCCL      := $(if $(wildcard $(CUDA_HOME)/include/nccl.h),1,0)
  NVCCFLAGS += -DNS_HAVE_NCCL=$(NCCL)
  CFLAGS    += -DNS_HAVE_CUDA=1 -DNS_HAVE_CUDNN=$(CUDNN) -I$(CUDA_HOME)/include
  # NVTX (nvtx3) is header-only and loads its tool library with dlopen.
  LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas \
               $(if $(filter 1,$(CUDNN)),-lcudnn) $(if $(filter 1,$(NCCL)),-lnccl) -lstdc++ -ldl
  CUDA_COMPILE = $(NVCC) $(NVCCFLAGS)
  $(info nostall: building with CUDA ($(NVCC)), cuDNN=$(CUDNN))
else ifeq ($(CUDA),emu)
  # The emulated device: the same .cu files as host C++ against kernels/emu's runtime
  # (streams as threads, blocks as fibers, a reference GEMM for cuBLAS, no cuDNN).
  # Tests only: its binaries are for test_cuda, never shipped.
  CUDNN       := 0
  CUDA_SRC    := $(wildcard kernels/cuda/*.cu)
  EMU_SRC     := $(wildcard kernels/emu/*.cpp)
  CUDA_OBJ    := $(CUDA_SRC:%.cu=$(BUILD)/%.o) $(EMU_SRC:%.cpp=$(BUILD)/%.o)
  CXX         ?= g++
  EMU_CXXFLAGS = $(filter-out -std=c11 -Werror -fopenmp,$(CFLAGS)) -std=c++17 -Werror -pthread
  CFLAGS      += -DNS_HAVE_CUDA=1 -DNS_HAVE_CUDNN=0 -DNS_HAVE_NCCL=1 -DNS_EMU=1 -Ikernels/emu
  LDLIBS      += -lstdc++ -pthread
  CUDA_COMPILE = $(CXX) -x c++ $(EMU_CXXFLAGS)
  $(info nostall: building the CUDA tables for the emulated device (kernels/emu, CPU only))
else
  $(info nostall: building without CUDA (nvcc not found or CUDA=0): CPU backend only)
endif

# --- MPI (data-parallel training across processes): MPI=auto uses Open MPI when its
# pkg-config file is there (Debian's libopenmpi-dev, installed by make setup). Without
# it the build still works and every run is a world of one (src/dist/dist.c).
MPI ?= auto
ifeq ($(MPI),auto)
  MPI := $(if $(shell pkg-config --exists ompi-c 2>/dev/null && echo yes),1,0)
endif
ifeq ($(MPI),1)
  CFLAGS += -DNS_HAVE_MPI=1 $(shell pkg-config --cflags ompi-c)
  LDLIBS += $(shell pkg-config --libs ompi-c)
endif

LIB_SRC := $(wildcard src/*/*.c kernels/*.c kernels/cpu/*.c models/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(GEN)/onnx.pb-c.o $(CUDA_OBJ)
LIB     := $(BUILD)/libnostall.a
TOOLS   := train bench prepare eval predict export
TOOL_BINS := $(TOOLS:%=$(BUILD)/bin/%)
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))

.PHONY: all setup test run data bench clean check-layers interop interop-doc
# The tools are built in build/bin and linked into the top folder (./train, ./bench,
# ./prepare); `make bench` is the benchmark run, not the binary.
all: $(TOOL_BINS)
	@if [ "$(BUILD)" = build ]; then for t in $(TOOLS); do ln -sf $(BUILD)/bin/$$t $$t; done; fi

$(BUILD)/%.o: %.c $(wildcard include/*.h kernels/*.h kernels/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The ONNX messages in C: protoc-c on the onnx.proto of Debian's python3-onnx (never
# vendored; scripts/gen-onnx.sh says which package is missing). Always required: the
# packages are in DEB_PKGS, so make setup installs them.
$(GEN)/onnx.pb-c.c:
	@sh scripts/gen-onnx.sh $(GEN)
$(GEN)/onnx.pb-c.h: $(GEN)/onnx.pb-c.c
$(GEN)/onnx.pb-c.o: $(GEN)/onnx.pb-c.c
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/src/export/onnx.o: $(GEN)/onnx.pb-c.h

$(BUILD)/%.o: %.cu $(wildcard include/*.h kernels/*.h kernels/*/*.h kernels/emu/*.h)
	@mkdir -p $(dir $@)
	$(CUDA_COMPILE) -c $< -o $@

$(BUILD)/kernels/emu/%.o: kernels/emu/%.cpp $(wildcard kernels/emu/*.h)
	@mkdir -p $(dir $@)
	$(CUDA_COMPILE) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# A tool is tools/NAME.c plus any tools/NAME_*.c (e.g. bench_ops.c, bench_loader.c).
.SECONDEXPANSION:
$(BUILD)/bin/%: tools/%.c $$(wildcard tools/$$*_*.c) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itools $(filter %.c,$^) $(LIB) $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(wildcard tests/fixtures/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(LIB) $(LDFLAGS) $(LDLIBS) -lcriterion -o $@
# make interop's AdamW run (tests/interop_adamw.c), which PyTorch repeats.
$(BUILD)/tests/interop_adamw: tests/interop_adamw.c tests/testutil.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@
# make test-tsan-cuda's program (tests/tsan_cuda.c), in the emulated build only.
$(BUILD)/tests/tsan_cuda: tests/tsan_cuda.c tests/ring_check.h tests/testutil.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@
$(BUILD)/tests/test_cuda: tests/ring_check.h
$(BUILD)/tests/test_export: $(GEN)/onnx.pb-c.h
# The kernel cases the CPU and CUDA kernel suites share.
$(BUILD)/tests/test_kernels $(BUILD)/tests/test_cuda: tests/kcases.h

# Installs only what is missing; prints what it does.
DEB_PKGS := build-essential pkg-config libcriterion-dev libstb-dev libopenblas-dev zlib1g-dev \
            libopenmpi-dev openmpi-bin libprotobuf-c-dev protobuf-c-compiler python3-onnx
setup:
	@sh scripts/setup.sh $(DEB_PKGS)

# test_cuda runs twice: in this build (on a GPU when there is one, else it says it
# skipped), and on the emulated device (kernels/emu/), whatever the machine has.
EMU_BUILD := build/emu
test: setup
	@$(MAKE) --no-print-directory all $(TESTS)
	@$(MAKE) --no-print-directory CUDA=emu BUILD=$(EMU_BUILD) $(EMU_BUILD)/tests/test_cuda $(EMU_BUILD)/bin/train
	@sh scripts/run-tests.sh $(TESTS)
	@sh scripts/test-emu.sh $(EMU_BUILD)/tests/test_cuda

data: setup all
	@sh scripts/setup.sh dataset-fashion-mnist
	./prepare fashion-mnist

run: setup
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory data
	./train configs/resnet_small.cfg

bench: all
	./bench ops --device cpu
	./bench loader
	@$(MAKE) --no-print-directory data
	./bench dist

clean:
	rm -rf $(BUILD) $(TOOLS)

# The exported model read by other frameworks: a short resnet_small run exported as ONNX
# and safetensors, checked against nostall's logits in onnxruntime and PyTorch
# (docs/export.md); reports to build/interop/interop.txt (make interop-doc: to
# docs/runs/interop.txt and docs/export.md). Python packages: Debian's, plus pinned
# onnxruntime and safetensors from PyPI in build/interop-venv (kept).
interop: setup
	@$(MAKE) --no-print-directory all $(BUILD)/tests/interop_adamw
	@$(MAKE) --no-print-directory data
	@BUILD=$(BUILD) sh scripts/interop.sh
interop-doc:
	@INTEROP_DOC=1 $(MAKE) --no-print-directory interop

# Includes point down the layers (docs/design.md); then the check must catch a planted
# upward include (core including train.h) in a scratch tree.
check-layers:
	@sh scripts/check-layers.sh
	@d=$$(mktemp -d) && mkdir -p $$d/src/core && printf '#include "train.h"\n' >$$d/src/core/planted.c && \
	  if sh scripts/check-layers.sh $$d; then echo "check-layers: the planted upward include was missed"; exit 1; fi; \
	  rm -rf $$d; echo "check-layers: a planted upward include (src/core -> train.h) is caught"

# --- reliability: fuzz, sanitizers ---
#   make fuzz            libFuzzer targets (clang, ASan+UBSan), FUZZ_SECONDS each (default 60)
#   make test-asan       every Criterion suite under AddressSanitizer + UBSan (build/asan)
#   make test-valgrind   the smoke training run under valgrind memcheck
#   make test-tsan-cuda  test_cuda on the emulated CUDA device under ThreadSanitizer
# docs/reliability.md has what they found and how to read their output.
.PHONY: fuzz test-asan test-valgrind test-tsan-cuda mutants
fuzz: setup
	@sh scripts/fuzz.sh
test-asan: setup
	@sh scripts/test-asan.sh
test-valgrind: setup
	@sh scripts/test-valgrind.sh
# test_cuda on the emulated device under ThreadSanitizer (streams are threads there)
test-tsan-cuda: setup
	@sh scripts/test-tsan-cuda.sh
# make mutants: each tests/mutations/*.patch plants a bug a test must catch (slow, not CI)
mutants: setup
	@sh scripts/mutants.sh
# The regression suite replays inputs through tests/fuzz/harness.h; seeds.c writes the seeds.
$(BUILD)/tests/test_regressions: $(wildcard tests/fuzz/*.h)
$(BUILD)/fuzz-seeds: tests/fuzz/seeds.c $(wildcard tests/fuzz/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/fuzz $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@

# ---- GPU tests -----------------------------------------------------------------------
# Builds and runs only the CUDA suite: on a machine without a GPU every test reports
# itself skipped, with the reason. scripts/gpu-check.sh does this and more on a GPU
# machine that has the CUDA toolkit but no package manager.
.PHONY: gpu-test
gpu-test: $(BUILD)/tests/test_cuda
	$(BUILD)/tests/test_cuda --jobs 1 --verbose

# ---- teaching lab ---------------------------------------------------------------------
# stall-lab: the pipeline-stall lab (a few minutes on 2 cores), which writes
# docs/stall-lab.md and its SVGs, then their PNG renderings. docs-images renders every
# docs/img/*.svg to a PNG beside it with rsvg-convert (Debian's librsvg2-bin).
.PHONY: stall-lab docs-images lab docs-check
stall-lab: all
	./bench pipeline
	@$(MAKE) --no-print-directory docs-images

# lab: every lab number and picture the docs show, measured again (scripts/lab.sh: it
# waits for a quiet machine, runs both labs in interleaved rounds, stamps commit, machine
# and load into docs/runs/lab.keys, writes the marked values into the docs, renders
# the PNGs). About 8 minutes on 2 cores, plus the wait.
lab: all
	@$(MAKE) --no-print-directory data
	@sh scripts/lab.sh
	@$(MAKE) --no-print-directory docs-images

# docs-check: each value the docs mark <!-- lab:KEY -->...<!-- /lab --> is the one the
# latest make lab wrote (docs/runs/*.keys); text only, nothing is measured. Then the
# check must catch a stale value planted in a scratch copy of the docs.
docs-check:
	@sh scripts/docs-check.sh
	@d=$$(mktemp -d) && mkdir -p $$d/docs/runs && cp README.md $$d/ && cp docs/*.md $$d/docs/ && \
	  cp docs/runs/*.keys $$d/docs/runs/ && \
	  sed -i '0,/ -->[^<]*<!-- \/lab -->/s// -->planted-stale<!-- \/lab -->/' $$d/docs/guide.md && \
	  if ! grep -q planted-stale $$d/docs/guide.md; then echo "docs-check: no marker in docs/guide.md to plant in"; rm -rf $$d; exit 1; fi; \
	  if sh scripts/docs-check.sh $$d >/dev/null 2>&1; then echo "docs-check: the planted stale value was missed"; rm -rf $$d; exit 1; fi; \
	  rm -rf $$d; echo "docs-check: a stale value planted in docs/guide.md is caught"

docs-images:
	@command -v rsvg-convert >/dev/null 2>&1 || sh scripts/setup.sh librsvg2-bin
	@for f in docs/img/*.svg; do \
	  rsvg-convert "$$f" -o "$${f%.svg}.png" && echo "rendered $${f%.svg}.png" || exit 1; \
	done
