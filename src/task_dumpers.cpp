// Per-interpreter task dumpers and the main interpreter's dump hook, called from the driver's io thread.
//
// Design: the io thread already holds the (shared) GIL when it dumps; to run an interpreter's dumper it
// borrows a temporary thread state in that interpreter, as Interpreter::Interrupt does. The interpreter must
// not end while that thread state exists: an entry is marked busy (under mu) before the call and
// UnregisterTaskDumper, which the actor's runtime calls before its trio.run returns, waits with the GIL
// released until no call is busy. Lock order: the GIL, then mu; nobody waits for the GIL while holding mu
// (conc-anal/hang-dump-task-trees.md).
#include "task_dumpers.hpp"

#include <condition_variable>
#include <map>
#include <mutex>

namespace subactor {
namespace {

struct Entry {
  PyInterpreterState* interp = nullptr;
  PyObject* fn = nullptr;  // a strong reference owned by interp
  int busy = 0;
};

std::mutex mu;
std::condition_variable idle_cv;                 // notified when an entry's busy count drops
auto* dumpers = new std::map<int64_t, Entry>();  // GUARDED_BY(mu), leaked: used until process exit
PyObject* hook = nullptr;                        // main interpreter's; read and written with the GIL

// The current exception as "Type: message" (cleared), in the current interpreter.
std::string TakeError() {
  PyObject* exc = PyErr_GetRaisedException();
  if (exc == nullptr) return "returned no str";
  std::string text = Py_TYPE(exc)->tp_name;
  if (PyObject* str = PyObject_Str(exc)) {
    if (const char* utf8 = PyUnicode_AsUTF8(str)) text += std::string(": ") + utf8;
    Py_DECREF(str);
  }
  PyErr_Clear();
  Py_DECREF(exc);
  return text;
}

// Converts a call's result (stolen) to a TaskDump, in the interpreter that made it.
TaskDump Convert(PyObject* result) {
  TaskDump dump;
  if (result != nullptr && PyUnicode_Check(result)) {
    Py_ssize_t size = 0;
    if (const char* utf8 = PyUnicode_AsUTF8AndSize(result, &size)) {
      dump.ok = true;
      dump.text.assign(utf8, static_cast<size_t>(size));
    }
  }
  if (!dump.ok) dump.text = TakeError();
  Py_XDECREF(result);
  return dump;
}

}  // namespace

void RegisterTaskDumper(PyObject* fn) {
  PyInterpreterState* interp = PyInterpreterState_Get();
  Py_INCREF(fn);
  PyObject* old = nullptr;
  {
    std::unique_lock lock(mu);
    Entry& entry = (*dumpers)[PyInterpreterState_GetID(interp)];
    // Replacing one that is being called: the caller holds its own reference for the call.
    old = entry.fn;
    entry.interp = interp;
    entry.fn = fn;
  }
  Py_XDECREF(old);
}

bool UnregisterTaskDumper() {
  const int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
  PyObject* fn = nullptr;
  bool found = false;
  const auto take = [&] {
    if (auto it = dumpers->find(id); it != dumpers->end()) {
      fn = it->second.fn;
      dumpers->erase(it);
      found = true;
    }
  };
  const auto idle = [id] {
    auto it = dumpers->find(id);
    return it == dumpers->end() || it->second.busy == 0;
  };
  bool waited = false;
  {
    std::lock_guard lock(mu);  // the GIL, then mu: allowed (nobody waits for the GIL holding mu)
    if (idle()) {
      take();
    } else {
      waited = true;
    }
  }
  if (waited) {  // a call is in progress, on the io thread: it needs the GIL to finish
    PyThreadState* tstate = PyEval_SaveThread();
    {
      std::unique_lock lock(mu);
      idle_cv.wait(lock, idle);
      take();
    }
    PyEval_RestoreThread(tstate);
  }
  Py_XDECREF(fn);
  return found;
}

std::vector<TaskDump> CallTaskDumpers() {
  std::vector<int64_t> ids;
  {
    std::lock_guard lock(mu);
    for (const auto& [id, entry] : *dumpers) ids.push_back(id);
  }
  std::vector<TaskDump> out;
  PyThreadState* caller = PyThreadState_Get();
  for (const int64_t id : ids) {
    PyInterpreterState* interp = nullptr;
    PyObject* fn = nullptr;
    {
      std::lock_guard lock(mu);
      auto it = dumpers->find(id);
      if (it == dumpers->end()) continue;  // unregistered meanwhile: that actor is over
      ++it->second.busy;
      interp = it->second.interp;
      fn = it->second.fn;
    }
    PyThreadState* temp = nullptr;
    if (PyThreadState_GetInterpreter(caller) != interp) {
      temp = PyThreadState_New(interp);
      PyThreadState_Swap(temp);
    }
    Py_INCREF(
        fn);  // in its own interpreter: a Register replacing it meanwhile drops only the table's reference
    TaskDump dump = Convert(PyObject_CallNoArgs(fn));
    Py_DECREF(fn);
    dump.interp_id = id;
    if (temp != nullptr) {
      PyThreadState_Clear(temp);
      PyThreadState_Swap(caller);
      PyThreadState_Delete(temp);
    }
    out.push_back(std::move(dump));
    {
      std::lock_guard lock(mu);
      if (auto it = dumpers->find(id); it != dumpers->end()) --it->second.busy;
    }
    idle_cv.notify_all();
  }
  return out;
}

void SetDumpHook(PyObject* fn) {
  Py_XINCREF(fn);
  PyObject* old = hook;
  hook = fn;
  Py_XDECREF(old);
}

std::optional<TaskDump> CallDumpHook(const char* kind, const std::string& path) {
  if (hook == nullptr) return std::nullopt;
  PyObject* fn = hook;
  Py_INCREF(fn);
  TaskDump dump = Convert(PyObject_CallFunction(fn, "ss", kind, path.c_str()));
  Py_DECREF(fn);
  return dump;
}

}  // namespace subactor
