// Python callbacks the hang dumps call from the driver's io thread: each interpreter's task dumper (its
// actor's trio task tree) and the main interpreter's dump hook (which lays out the whole dump).
#pragma once

#include <Python.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace subactor {

// Registers fn (a callable taking no arguments and returning a str) as the calling interpreter's task dumper,
// replacing an earlier one. Call WITH the GIL, in the interpreter fn belongs to.
void RegisterTaskDumper(PyObject* fn);

// Removes the calling interpreter's task dumper; if the io thread is calling it right now, waits (GIL
// released) until that call returns, so no thread state of ours is left in an interpreter that goes on to
// end. Returns false if none was registered. Call WITH the GIL, in the interpreter that registered it.
bool UnregisterTaskDumper();

struct TaskDump {
  int64_t interp_id = 0;
  bool ok = false;
  std::string text;  // the dumper's str (UTF-8), or what went wrong
};

// Calls every registered task dumper, each in its own interpreter (through a temporary thread state there,
// unless it is the caller's), and copies its result out. Call WITH the GIL.
std::vector<TaskDump> CallTaskDumpers();

// Sets (nullptr: clears) the dump hook, a callable (kind: str, path: str) -> str called by the watchdog
// ("watchdog", the dump file) and the dump server ("request", "") in place of WriteStacks. Main interpreter
// only. Call WITH the GIL.
void SetDumpHook(PyObject* fn);

// Calls the dump hook. nullopt when none is set; else ok and its str, or !ok and what went wrong. Call WITH
// the GIL, on a thread state of the main interpreter.
std::optional<TaskDump> CallDumpHook(const char* kind, const std::string& path);

}  // namespace subactor
