// Stack dumps of every interpreter and thread state in the process, plus the driver's view of its handles.
#pragma once

#include <cstdio>
#include <string>

namespace subactor {

// The last line of every complete dump (a reader polling the file knows the dump is whole).
inline constexpr char kDumpEnd[] = "=== end of subactor stack dump ===\n\n";

// Writes one line per live driver handle (state, thread, seconds running, label). Needs no GIL.
void WriteDriverView(std::FILE* out);

// Writes, for every interpreter (main and subinterpreters) and every thread state in it, the Python stack,
// most recent call last, labelled with the interpreter id, the handle's name and label, and each thread's
// native id and Python ident. Read only: no object is created or touched in another interpreter. Call WITH
// the GIL; takes the runtime's HEAD_LOCK while walking.
void WriteStacks(std::FILE* out);

// Appends a header, WriteDriverView and WriteStacks to path. Call WITH the GIL. Throws std::system_error
// when path cannot be opened.
void DumpStacks(const std::string& path);

}  // namespace subactor
