// Stack dumps across interpreters: walks the interpreter and thread-state lists and the raw frame chains.
//
// faulthandler and sys._current_frames() see only the current interpreter, so this walks
// PyInterpreterState_Head/Next -> thread states -> _PyInterpreterFrame chains itself (internal structs:
// compiled with Py_BUILD_CORE_MODULE). It only reads: no frame objects are materialized, no strings are
// encoded, so objects of other interpreters are never allocated, mutated or refcounted. Interpreters with
// their own GIL are listed but not walked (their frames change under us).
//
// Safety of the walk: the caller holds the (shared) GIL, so no legacy interpreter's thread runs Python and
// frame chains hold still. Thread states and interpreters are linked, unlinked and freed by threads that
// do NOT hold the GIL (a new worker creates its interpreter before taking the GIL; an exiting thread drops
// the GIL before its thread state is unlinked), but always under the runtime's HEAD_LOCK, which the walk
// therefore holds throughout. It copies into C++ strings under that lock and formats afterwards, so a slow
// file never keeps other threads from starting or ending, and no Python object is made under the lock.
#include "stacks.hpp"

#include <Python.h>
#include <internal/pycore_interp_structs.h>
#include <internal/pycore_interpframe.h>
#include <internal/pycore_pystate.h>
#include <internal/pycore_runtime.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <system_error>
#include <vector>

#include "registry.hpp"

namespace subactor {
namespace {

constexpr int kMaxFrames = 200;

// Appends a str as UTF-8 without creating objects (no UTF-8 cache is filled in another interpreter's string).
void AppendStr(std::string& out, PyObject* obj) {
  if (obj == nullptr || !PyUnicode_Check(obj)) {
    out += "???";
    return;
  }
  const Py_ssize_t length = PyUnicode_GET_LENGTH(obj);
  for (Py_ssize_t i = 0; i < length && i < 500; ++i) {
    const Py_UCS4 ch = PyUnicode_READ_CHAR(obj, i);
    const auto put = [&out](Py_UCS4 byte) { out += static_cast<char>(byte & 0xFF); };
    if (ch < 0x80) {
      put(ch);
    } else if (ch < 0x800) {
      put(0xC0 | (ch >> 6));
      put(0x80 | (ch & 0x3F));
    } else if (ch < 0x10000) {
      put(0xE0 | (ch >> 12));
      put(0x80 | ((ch >> 6) & 0x3F));
      put(0x80 | (ch & 0x3F));
    } else {
      put(0xF0 | (ch >> 18));
      put(0x80 | ((ch >> 12) & 0x3F));
      put(0x80 | ((ch >> 6) & 0x3F));
      put(0x80 | (ch & 0x3F));
    }
  }
}

ThreadStack ReadThread(PyThreadState* tstate, PyThreadState* current) {
  ThreadStack thread;
  thread.native_id = tstate->native_thread_id;
  thread.ident = tstate->thread_id;
  thread.dumping = tstate == current;
  std::vector<_PyInterpreterFrame*> frames;
  for (_PyInterpreterFrame* frame = tstate->current_frame; frame != nullptr; frame = frame->previous) {
    if (frame->owner >= FRAME_OWNED_BY_INTERPRETER || _PyFrame_IsIncomplete(frame)) continue;
    if (!PyCode_Check(PyStackRef_AsPyObjectBorrow(frame->f_executable))) continue;
    if (static_cast<int>(frames.size()) == kMaxFrames) {
      ++thread.skipped;
      continue;
    }
    frames.push_back(frame);
  }
  for (auto it = frames.rbegin(); it != frames.rend(); ++it) {  // most recent call last
    auto* code = reinterpret_cast<PyCodeObject*>(PyStackRef_AsPyObjectBorrow((*it)->f_executable));
    FrameLine line;
    AppendStr(line.file, code->co_filename);
    AppendStr(line.function, code->co_name);
    line.line = PyUnstable_InterpreterFrame_GetLine(*it);
    thread.frames.push_back(std::move(line));
  }
  return thread;
}

void WriteThread(std::FILE* out, const ThreadStack& thread) {
  std::fprintf(out, "  thread %lu (ident %#lx)%s:\n", thread.native_id, thread.ident,
               thread.dumping ? " (the dumping thread)" : "");
  if (thread.frames.empty()) std::fputs("    (no Python frames)\n", out);
  if (thread.skipped) std::fprintf(out, "    ... %d older frames not shown\n", thread.skipped);
  for (const FrameLine& frame : thread.frames) {
    std::fprintf(out, "    File \"%s\", line %d, in %s\n", frame.file.c_str(), frame.line,
                 frame.function.c_str());
  }
}

}  // namespace

void WriteDriverView(std::FILE* out) {
  const auto live = Registry::Get().LiveSnapshots();
  const auto labels = Registry::Get().Labels();
  std::fprintf(out, "driver: %zu live interpreter(s)\n", live.size());
  for (const Snapshot& s : live) {
    std::fprintf(out, "  interpreter %s '%s': %s, thread %s, %.3f s, spawned by interpreter %lld",
                 s.id ? std::to_string(*s.id).c_str() : "?", s.name.c_str(), StateName(s.state),
                 s.thread_id ? std::to_string(*s.thread_id).c_str() : "?", s.running_for,
                 static_cast<long long>(s.parent_id));
    if (auto it = s.id ? labels.find(*s.id) : labels.end(); it != labels.end()) {
      std::fprintf(out, " [%s]", it->second.c_str());
    }
    std::fputc('\n', out);
  }
}

std::vector<InterpreterStacks> CollectStacks() {
  std::vector<InterpreterStacks> result;
  PyThreadState* current = PyThreadState_Get();
  PyInterpreterState* main = PyInterpreterState_Main();
  HEAD_LOCK(&_PyRuntime);
  for (PyInterpreterState* interp = PyInterpreterState_Head(); interp;
       interp = PyInterpreterState_Next(interp)) {
    InterpreterStacks& stacks = result.emplace_back();
    stacks.id = PyInterpreterState_GetID(interp);
    stacks.main = interp == main;
    stacks.own_gil = interp != main && interp->ceval.own_gil;
    if (stacks.own_gil) continue;
    for (PyThreadState* ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts)) {
      stacks.threads.push_back(ReadThread(ts, current));
    }
  }
  HEAD_UNLOCK(&_PyRuntime);
  return result;
}

void WriteStacks(std::FILE* out) {
  std::map<int64_t, Snapshot> handles;
  for (Snapshot& s : Registry::Get().LiveSnapshots()) {
    if (s.id) handles.emplace(*s.id, std::move(s));
  }
  const auto labels = Registry::Get().Labels();
  // Read under HEAD_LOCK into memory, written afterwards: a slow file never keeps threads from starting or
  // ending.
  for (const InterpreterStacks& stacks : CollectStacks()) {
    std::fprintf(out, "interpreter %lld", static_cast<long long>(stacks.id));
    if (stacks.main) std::fputs(" (main)", out);
    if (auto it = handles.find(stacks.id); it != handles.end()) {
      std::fprintf(out, " '%s' (driver: %s, %.3f s)", it->second.name.c_str(), StateName(it->second.state),
                   it->second.running_for);
    }
    if (auto it = labels.find(stacks.id); it != labels.end()) std::fprintf(out, " [%s]", it->second.c_str());
    std::fputc('\n', out);
    if (stacks.own_gil) {
      std::fputs("  (has its own GIL: stacks not read)\n", out);
      continue;
    }
    for (const ThreadStack& thread : stacks.threads) WriteThread(out, thread);
  }
}

void DumpStacks(const std::string& path) {
  std::FILE* out = std::fopen(path.c_str(), "a");
  if (out == nullptr) throw std::system_error(errno, std::generic_category(), "cannot open '" + path + "'");
  std::fprintf(out, "=== subactor stack dump: pid %d, most recent call last ===\n",
               static_cast<int>(getpid()));
  WriteDriverView(out);
  WriteStacks(out);
  std::fputs(kDumpEnd, out);
  std::fclose(out);
}

}  // namespace subactor
