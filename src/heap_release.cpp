// Gives the pages of CPython's free small-object pools back to the OS (see heap_release.hpp).
#include "heap_release.hpp"

#include <Python.h>
#include <internal/pycore_interp_structs.h>  // interp->obmalloc
#include <internal/pycore_obmalloc.h>
#include <internal/pycore_pymem.h>  // _PyMem_GetCurrentAllocatorName
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

namespace subactor {
namespace {

// obmalloc.c's DUMMY_SIZE_IDX: the size class of a pool that never held blocks. A free pool keeping its old
// size class is reused through its old free-block list; with this one it is initialised afresh.
constexpr unsigned kNeverUsedSizeClass = 0xffff;
constexpr auto kPauseEvery = std::chrono::milliseconds(1);

}  // namespace

HeapRelease ReleaseFreeObmallocPools(void (*pause)()) {
  HeapRelease released;
  const char* allocator = _PyMem_GetCurrentAllocatorName();
  if (allocator == nullptr || std::strcmp(allocator, "pymalloc") != 0) return released;
  _obmalloc_state* state = PyInterpreterState_Main()->obmalloc;
  const long page = sysconf(_SC_PAGESIZE);
  if (state == nullptr || page <= 0 || static_cast<size_t>(page) >= POOL_SIZE) return released;
  const size_t tail = POOL_SIZE - static_cast<size_t>(page);
  auto since_pause = std::chrono::steady_clock::now();
  for (unsigned i = 0; i < state->mgmt.maxarenas; ++i) {
    if (pause != nullptr && std::chrono::steady_clock::now() - since_pause > kPauseEvery) {
      pause();  // the table may have grown (moved) or arenas come and gone: re-read it below
      since_pause = std::chrono::steady_clock::now();
      if (i >= state->mgmt.maxarenas) break;
    }
    const arena_object& arena = state->mgmt.arenas[i];
    if (arena.address == 0) continue;  // an unused arena object
    for (pool_header* pool = arena.freepools; pool != nullptr; pool = pool->nextpool) {
      if (pool->szidx == kNeverUsedSizeClass) continue;  // released before, not reused since
      pool->szidx = kNeverUsedSizeClass;
      if (madvise(reinterpret_cast<char*>(pool) + page, tail, MADV_DONTNEED) == 0) {
        ++released.pools;
        released.bytes += tail;
      }
    }
  }
  return released;
}

}  // namespace subactor
