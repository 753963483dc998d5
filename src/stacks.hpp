// Stack dumps of every interpreter and thread state in the process, plus the driver's view of its handles.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace subactor {

// The last line of every complete dump (a reader polling the file knows the dump is whole).
inline constexpr char kDumpEnd[] = "=== end of subactor stack dump ===\n\n";

// Writes one line per live driver handle (state, thread, seconds running, label). Needs no GIL.
void WriteDriverView(std::FILE* out);

// One frame of a thread's stack, copied out of the interpreter (UTF-8).
struct FrameLine {
  std::string file;
  std::string function;
  int line = 0;
};

struct ThreadStack {
  unsigned long native_id = 0;
  unsigned long ident = 0;
  bool dumping = false;           // the thread that reads the stacks
  int skipped = 0;                // older frames past the limit, not copied
  std::vector<FrameLine> frames;  // most recent call last
};

struct InterpreterStacks {
  int64_t id = 0;
  bool main = false;
  bool own_gil = false;  // not read: its frames change under us
  std::vector<ThreadStack> threads;
};

// Every interpreter's thread stacks, copied out read-only. Call WITH the GIL; takes the runtime's HEAD_LOCK.
std::vector<InterpreterStacks> CollectStacks();

// Writes, for every interpreter (main and subinterpreters) and every thread state in it, the Python stack,
// most recent call last, labelled with the interpreter id, the handle's name and label, and each thread's
// native id and Python ident. Read only: no object is created or touched in another interpreter. Call WITH
// the GIL; takes the runtime's HEAD_LOCK while walking.
void WriteStacks(std::FILE* out);

// Appends a header, WriteDriverView and WriteStacks to path. Call WITH the GIL. Throws std::system_error
// when path cannot be opened.
void DumpStacks(const std::string& path);

}  // namespace subactor
