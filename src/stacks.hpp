// Stack dumps of every interpreter and thread state in the process, plus the driver's view of its handles.
#pragma once

#include <cstdio>
#include <string>

namespace subactor {

// Writes one line per live driver handle (state, thread, seconds running). Needs no GIL.
void WriteDriverView(std::FILE* out);

// Writes, for every interpreter (main and subinterpreters) and every thread state in it, the Python stack,
// most recent call last, labelled with the interpreter id, native thread id and the handle's name. Read
// only: no object is created or touched in another interpreter. Call WITH the GIL.
void WriteStacks(std::FILE* out);

// Appends a header, WriteDriverView and WriteStacks to path. Call WITH the GIL. Throws std::system_error
// when path cannot be opened.
void DumpStacks(const std::string& path);

}  // namespace subactor
