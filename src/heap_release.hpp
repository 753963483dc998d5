// Gives the pages of CPython's free small-object pools back to the OS (what glibc's malloc_trim cannot see).
#pragma once

#include <cstddef>

namespace subactor {

// Legacy subinterpreters allocate small objects from the main interpreter's obmalloc arenas (1 MiB each, 16
// KiB pools). When an interpreter ends, its objects are freed, but an arena is returned to the OS only once
// every pool in it is empty, and a few long-lived objects (the main interpreter's, or ones CPython keeps per
// ended interpreter) pin most arenas: measured, after 20 subint actors ended, 203 arenas (212 MiB) stayed
// resident holding 14 MiB of live blocks, 143 MiB of it in completely free pools.
//
// ReleaseFreeObmallocPools() walks the main obmalloc state's arenas and, for each pool on an arena's free
// list, marks it as never used (so obmalloc re-initialises it instead of trusting the free-block list
// threaded through its blocks) and MADV_DONTNEEDs every page of it but the first (which holds the pool header
// and the free list's link). Touching a released page later gives a zero page, which a fresh pool never reads
// before writing. Only with the "pymalloc" allocator (not its debug variant, not malloc or mimalloc): it
// returns {0, 0} otherwise.
//
// A pool released once keeps the never-used size class until obmalloc reuses it, so a later call skips it.
// Releasing costs about 13 us per pool (the kernel frees three pages); `pause`, when given, is called between
// arenas once about a millisecond has passed since the last call, to let other threads have the GIL: it must
// release and re-take it (the walk re-reads the arena table afterwards, which may have changed meanwhile).
//
// REQUIRES the GIL of the main interpreter (shared with every legacy interpreter): obmalloc's state is
// guarded by it. It reads CPython's internal structures (pycore_obmalloc.h) of the version it was compiled
// against; the extension is built per CPython minor version, and these did not change within 3.14.
struct HeapRelease {
  size_t pools = 0;  // free pools whose pages were released
  size_t bytes = 0;  // bytes of address space advised away (some may not have been resident)
};
HeapRelease ReleaseFreeObmallocPools(void (*pause)() = nullptr);

}  // namespace subactor
