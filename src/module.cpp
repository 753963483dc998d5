// The `subactor._native` extension: pybind11 bindings over the driver core (argument checks live here).
#include <malloc.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <system_error>

#include "dump_server.hpp"
#include "heap_release.hpp"
#include "interpreter.hpp"
#include "io_loop.hpp"
#include "orphan_watch.hpp"
#include "registry.hpp"
#include "shelf.hpp"
#include "socket_io.hpp"
#include "stacks.hpp"
#include "task_dumpers.hpp"

namespace py = pybind11;
using subactor::Interpreter;
using subactor::Outcome;
using subactor::Snapshot;
using subactor::Timer;

namespace {

// Releases the GIL for a scope (plain C API: no pybind11 thread-local state, fine in any interpreter).
class GilRelease {
 public:
  GilRelease() : tstate_(PyEval_SaveThread()) {}
  ~GilRelease() { PyEval_RestoreThread(tstate_); }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  PyThreadState* tstate_;
};

std::string Repr(const py::handle& obj) { return py::repr(obj).cast<std::string>(); }

// A str from UTF-8 that may be cut mid-character (copied out of another interpreter, bounded).
py::str Utf8(const std::string& text) {
  PyObject* str = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "replace");
  if (str == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(str);
}

double CheckSeconds(double value, const char* what) {
  if (!std::isfinite(value) || value < 0) {
    throw py::value_error(std::string(what) + " must be a finite number >= 0, not " +
                          Repr(py::float_(value)));
  }
  return value;
}

std::string CheckStr(const py::object& value, const char* what) {
  if (!py::isinstance<py::str>(value))
    throw py::type_error(std::string(what) + " must be a str, not " + Repr(value));
  return value.cast<std::string>();
}

PyObject* CheckExc(const py::object& exc) {
  const std::string name = CheckStr(exc, "exc");
  PyObject* type = subactor::BuiltinExceptionType(name);
  if (type == nullptr)
    throw py::value_error("exc must name a builtin BaseException subclass, not " + Repr(exc));
  return type;
}

void CheckOpen(const Interpreter& self) {
  if (self.closed()) throw std::runtime_error(self.Label() + " is closed");
}

int64_t CurrentInterpreterId() { return PyInterpreterState_GetID(PyInterpreterState_Get()); }

py::dict SnapshotDict(const Snapshot& s) {
  py::dict d;
  d["id"] = s.id ? py::cast(*s.id) : py::none();
  d["thread_id"] = s.thread_id ? py::cast(*s.thread_id) : py::none();
  d["name"] = s.name;
  d["state"] = subactor::StateName(s.state);
  d["running_for"] = s.running_for;
  d["parent_id"] = s.parent_id;
  return d;
}

py::list SnapshotList(const std::vector<Snapshot>& snapshots) {
  py::list out;
  for (const Snapshot& s : snapshots) out.append(SnapshotDict(s));
  return out;
}

std::string PathArg(const py::object& path) {
  return py::module_::import("os").attr("fspath")(path).cast<std::string>();
}

[[noreturn]] void RaiseOSError(const std::system_error& error) {
  PyErr_SetString(PyExc_OSError, error.what());
  throw py::error_already_set();
}

// Freeing pybind11's per-interpreter internals when one of our interpreters ends. pybind11 3.1 keeps them in
// a capsule of the interpreter's state dict and leaks them at interpreter shutdown on purpose (its
// detail/internals.h: pybind11 code may still run during finalization and must not find them gone). Each
// holds a thread_specific_storage, i.e. a pthread TSS key, so every interpreter that imported this module
// used to keep one key for the life of the process: the 1,019th failed to import (PTHREAD_KEYS_MAX is 1,024).
// The recipe is pybind11's own for the interpreters it ends (pybind11/subinterpreter.h, ~subinterpreter):
// fetch the pointer-to-pointers with the interpreter's thread state current (this caches them in the
// thread's pybind11 thread-locals), Py_EndInterpreter (any pybind11 code it runs still finds the internals),
// then destroy() them, which with no thread state current deletes the cached ones and forgets them. Only the
// worker thread that ran the interpreter does this, after the interpreter is gone and with no other thread
// left in it, and it exits right after, so nothing can reach the freed internals. Guards: never in the main
// interpreter (the process exit frees those), and only once pybind11 is in its multi-interpreter mode (set
// when a subinterpreter first imports the module): before that, get_pp()/destroy() act on the one
// process-wide singleton, which may be the main interpreter's. An interpreter that never imported the module
// gets an empty pointer-to-pointer created and deleted, which is harmless. Abandoned interpreters never end,
// so theirs stay allocated.
bool PrepareToFreeInternals() {
  if (!py::detail::has_seen_non_main_interpreter()) return false;
  if (PyInterpreterState_Get() == PyInterpreterState_Main()) return false;
  try {
    py::detail::get_internals_pp_manager().get_pp();
    py::detail::get_local_internals_pp_manager().get_pp();
  } catch (const std::exception&) {  // the state dict cannot be read: leave them allocated, as before
    PyErr_Clear();
    return false;
  }
  return true;
}

void FreeInternals() {
  py::detail::get_internals_pp_manager().destroy();
  py::detail::get_local_internals_pp_manager().destroy();
}

}  // namespace

// shared_gil: legacy (shared-GIL) subinterpreters may import it; interpreters with their own GIL refuse
// to, because the interrupt recipe and the stack dumps rely on one GIL for every interpreter involved.
PYBIND11_MODULE(_native, m, py::multiple_interpreters::shared_gil()) {
  subactor::SetEndHooks({&PrepareToFreeInternals, &FreeInternals});
  m.doc() = "Native subinterpreter driver: spawn, join, interrupt, abandon and inspect interpreters";

  py::class_<Outcome>(m, "Outcome", "How an interpreter's bootstrap ended")
      .def_readonly("ok", &Outcome::ok, "True if it returned or raised SystemExit(0)/SystemExit(None)")
      .def_readonly("exit_code", &Outcome::exit_code, "0 on return, SystemExit's code, else None")
      .def_readonly("exc_type", &Outcome::exc_type,
                    "module-qualified type name as tracebacks print it: 'ValueError', 'pkg.mod.Error'")
      .def_readonly("exc_message", &Outcome::exc_message, "str() of the exception")
      .def_readonly("traceback", &Outcome::traceback, "the formatted traceback text")
      .def("__repr__", [](const Outcome& o) {
        if (o.ok) return "<Outcome ok exit_code=" + std::to_string(o.exit_code.value_or(0)) + ">";
        return "<Outcome " + o.exc_type.value_or("?") + ": " + o.exc_message.value_or("") + ">";
      });

  py::class_<Timer, std::shared_ptr<Timer>>(m, "Timer", "A one-shot deadline on the driver's io thread")
      .def("cancel", &Timer::Cancel, "Stop it; True if it had not fired (it never will now)")
      .def_property_readonly("fired", &Timer::fired);

  py::class_<Interpreter, std::shared_ptr<Interpreter>>(m, "Interpreter",
                                                        "A subinterpreter running on its own OS thread")
      .def_property_readonly("name", &Interpreter::name)
      .def_property_readonly("id", [](const Interpreter& self) { return self.Snap().id; })
      .def_property_readonly("thread_id", [](const Interpreter& self) { return self.Snap().thread_id; })
      .def_property_readonly("state",
                             [](const Interpreter& self) { return subactor::StateName(self.state()); })
      .def_property_readonly("outcome", &Interpreter::outcome, "How the bootstrap ended; None until done")
      .def_property_readonly("running_for", [](const Interpreter& self) { return self.Snap().running_for; })
      .def_property_readonly(
          "done_fd",
          [](const Interpreter& self) {
            CheckOpen(self);
            return self.done_fd();
          },
          "An eventfd that becomes (and stays) readable once the interpreter is done: its bootstrap "
          "returned, "
          "its threads are gone, its atexit callbacks ran, `outcome` is set. It may still be 'ending' "
          "(finalizing) then")
      .def_property_readonly(
          "exit_fd",
          [](const Interpreter& self) {
            CheckOpen(self);
            return self.exit_fd();
          },
          "An eventfd that becomes (and stays) readable once the thread is finished: the interpreter is gone")
      .def(
          "join",
          [](Interpreter& self, double timeout) {
            CheckSeconds(timeout, "timeout");
            GilRelease release;
            return self.Join(timeout);
          },
          py::arg("timeout"),
          "Wait up to timeout seconds for the thread to finish; True if it did. Works after close() too (a "
          "handle closed while ending finishes later)")
      .def(
          "interrupt",
          [](Interpreter& self, const py::object& exc, bool all_threads) {
            PyObject* type = CheckExc(exc);
            CheckOpen(self);
            return self.Interrupt(type, all_threads);
          },
          py::arg("exc") = "KeyboardInterrupt", py::kw_only(), py::arg("all_threads") = true,
          "Raise a builtin exception in the interpreter's threads; False if it already finished")
      .def(
          "abandon",
          [](Interpreter& self) {
            CheckOpen(self);
            return self.Abandon();
          },
          "Give up on a thread stuck in C; False if it already finished")
      .def(
          "close",
          [](Interpreter& self) {
            if (!self.Close()) throw std::runtime_error("cannot close " + self.Label() + " (still running)");
          },
          "Release done_fd and exit_fd; only once done (ending: they are closed when it finishes) or "
          "abandoned")
      .def("__repr__", [](const Interpreter& self) {
        const Snapshot s = self.Snap();
        return "<Interpreter " + (s.id ? std::to_string(*s.id) : std::string("?")) + " '" + s.name + "' " +
               subactor::StateName(s.state) + ">";
      });

  m.def(
      "spawn",
      [](const py::object& code, const py::object& name) {
        std::string source = CheckStr(code, "code");
        if (source.find('\0') != std::string::npos)
          throw py::value_error("code must not contain NUL characters");
        return Interpreter::Spawn(std::move(source), CheckStr(name, "name"), CurrentInterpreterId());
      },
      py::arg("code"), py::kw_only(), py::arg("name") = "",
      "Start a legacy-config subinterpreter on a new thread running code in its __main__");
  m.def(
      "live", [] { return SnapshotList(subactor::Registry::Get().LiveSnapshots()); },
      "The handles whose thread has not finished, as dicts");
  m.def("live_count", [] { return subactor::Registry::Get().LiveCount(); });
  m.def(
      "shutdown",
      [](double timeout, std::optional<int64_t> spawned_by, std::optional<double> finalize_timeout) {
        CheckSeconds(timeout, "timeout");
        if (finalize_timeout) CheckSeconds(*finalize_timeout, "finalize_timeout");
        return SnapshotList(subactor::Shutdown(timeout, spawned_by, finalize_timeout));
      },
      py::arg("timeout"), py::kw_only(), py::arg("spawned_by") = py::none(),
      py::arg("finalize_timeout") = subactor::kDefaultFinalizeTimeout,
      "Interrupt every live interpreter (or those spawned by one interpreter), wait up to timeout for them "
      "to be done and abandon the rest; then wait up to finalize_timeout (None: not at all) for the done "
      "ones to finish ending. Returns the abandoned ones and those still ending");
  m.def(
      "interrupt_after",
      [](std::shared_ptr<Interpreter> handle, double seconds, const py::object& exc) {
        CheckSeconds(seconds, "seconds");
        PyObject* type = CheckExc(exc);
        CheckOpen(*handle);
        return subactor::InterruptAfter(std::move(handle), seconds, type);
      },
      py::arg("handle"), py::arg("seconds"), py::arg("exc") = "KeyboardInterrupt",
      "Interrupt handle after seconds from the driver's io thread (needs no Python event loop)");
  m.def(
      "dump_stacks",
      [](const py::object& path) {
        try {
          subactor::DumpStacks(PathArg(path));
        } catch (const std::system_error& error) {
          RaiseOSError(error);
        }
      },
      py::arg("path"), "Append every interpreter's thread stacks and the driver's view to path");
  m.def(
      "arm_watchdog",
      [](double seconds, const py::object& path) {
        CheckSeconds(seconds, "seconds");
        return subactor::ArmWatchdog(seconds, PathArg(path));
      },
      py::arg("seconds"), py::arg("path"),
      "Dump stacks to path unless disarmed within seconds; returns an id");
  m.def(
      "disarm_watchdog",
      [](int64_t id, double wait) {
        CheckSeconds(wait, "wait");
        GilRelease release;
        return subactor::DisarmWatchdog(id, wait);
      },
      py::arg("id"), py::kw_only(), py::arg("wait") = 0.0,
      "Cancel a watchdog; True if it had not fired. If it fired, wait up to `wait` seconds for its dump "
      "to be complete");
  m.def(
      "wait_watchdog",
      [](int64_t id, double timeout) {
        CheckSeconds(timeout, "timeout");
        GilRelease release;
        return subactor::WaitWatchdog(id, timeout);
      },
      py::arg("id"), py::arg("timeout"),
      "Wait up to timeout seconds for a watchdog to fire and its dump to be complete; True if it is");
  m.def(
      "serve_dumps",
      [](const py::object& path) {
        const std::string where = PathArg(path);
        try {
          subactor::ServeDumps(where);
        } catch (const std::system_error& error) {
          RaiseOSError(error);
        }
      },
      py::arg("path"),
      "Answer every connection to a new UNIX socket at path with a full dump, from the driver's io thread");
  m.def(
      "driver_view",
      [] {
        char* text = nullptr;
        size_t size = 0;
        std::FILE* mem = open_memstream(&text, &size);
        if (mem == nullptr) throw std::bad_alloc();
        subactor::WriteDriverView(mem);
        std::fclose(mem);
        std::string out(text, size);
        std::free(text);
        return out;
      },
      "The driver's view of its live interpreters, as the dumps write it");
  m.def(
      "thread_stacks",
      [] {
        const auto snapshot =
            subactor::CollectStacks();  // copied out under the runtime's lock; objects after
        py::list out;
        for (const auto& interp : snapshot) {
          py::list threads;
          for (const auto& thread : interp.threads) {
            py::list frames;
            for (const auto& frame : thread.frames) {
              frames.append(py::make_tuple(Utf8(frame.file), frame.line, Utf8(frame.function)));
            }
            py::dict t;
            t["native_id"] = thread.native_id;
            t["ident"] = thread.ident;
            t["dumping"] = thread.dumping;
            t["skipped"] = thread.skipped;
            t["frames"] = frames;
            threads.append(t);
          }
          py::dict d;
          d["id"] = interp.id;
          d["main"] = interp.main;
          d["own_gil"] = interp.own_gil;
          d["threads"] = threads;
          out.append(d);
        }
        return out;
      },
      "Every interpreter's thread stacks (read-only, most recent call last) as dicts: id, main, own_gil, "
      "threads [{native_id, ident, dumping, skipped, frames [(file, line, function)]}]");
  m.def(
      "register_task_dumper",
      [](const py::object& fn) {
        if (!PyCallable_Check(fn.ptr())) throw py::type_error("fn must be callable, not " + Repr(fn));
        subactor::RegisterTaskDumper(fn.ptr());
      },
      py::arg("fn"),
      "Make fn() -> str the calling interpreter's task dumper: the hang dumps call it from the driver's io "
      "thread, in this interpreter, with the GIL");
  m.def(
      "unregister_task_dumper", &subactor::UnregisterTaskDumper,
      "Remove the calling interpreter's task dumper, waiting (GIL released) for a call in progress; False if "
      "none was registered");
  m.def(
      "call_task_dumpers",
      [] {
        py::list out;
        for (auto& dump : subactor::CallTaskDumpers()) {
          out.append(py::make_tuple(dump.interp_id, dump.ok, Utf8(dump.text)));
        }
        return out;
      },
      "Call every interpreter's task dumper in its own interpreter: [(interpreter id, ok, str or error)]");
  m.def(
      "set_dump_hook",
      [](const py::object& fn) {
        if (CurrentInterpreterId() != 0)
          throw py::value_error("the dump hook belongs to the main interpreter");
        if (!fn.is_none() && !PyCallable_Check(fn.ptr()))
          throw py::type_error("fn must be callable or None, not " + Repr(fn));
        subactor::SetDumpHook(fn.is_none() ? nullptr : fn.ptr());
      },
      py::arg("fn"),
      "Lay out the watchdog's and the dump server's dumps with fn(kind, path) -> str instead of the bare "
      "thread stacks (main interpreter only; None removes it)");
  m.def("stop_serving_dumps", &subactor::StopServingDumps,
        "Stop the dump server (the caller removes its socket file); False if none was running");
  m.def(
      "set_interpreter_label",
      [](const py::object& label) {
        subactor::Registry::Get().SetLabel(CurrentInterpreterId(), CheckStr(label, "label"));
      },
      py::arg("label"),
      "Label the calling interpreter in stack dumps (e.g. with the actor it runs); '' removes the label");
  m.def(
      "interpreter_labels", [] { return subactor::Registry::Get().Labels(); },
      "The labels set with set_interpreter_label, by interpreter id");
  m.def(
      "exit_when_process_ends",
      [](int pidfd, double grace, const py::object& message, int status) {
        CheckSeconds(grace, "grace");
        if (pidfd < 0) throw py::value_error("pidfd must be an open pidfd, not " + Repr(py::int_(pidfd)));
        if (status < 0 || status > 255)
          throw py::value_error("status must be an exit status from 0 to 255, not " + Repr(py::int_(status)));
        try {
          return subactor::ArmExitWhenProcessEnds(pidfd, grace, CheckStr(message, "message"), status);
        } catch (const std::system_error& error) {
          RaiseOSError(error);
        }
      },
      py::arg("pidfd"), py::arg("grace"), py::kw_only(), py::arg("message"), py::arg("status"),
      "From a native thread (no GIL, no event loop): once the process behind pidfd (os.pidfd_open; the "
      "caller keeps its own fd) has ended, wait grace seconds, then unless cancelled write message to stderr "
      "and leave with _exit(status). Returns an id for cancel_exit_when_process_ends");
  m.def("cancel_exit_when_process_ends", &subactor::DisarmExitWhenProcessEnds, py::arg("id"),
        "Cancel an exit_when_process_ends watch; True if it was armed and had not fired");
  m.def(
      "atexit_callbacks",
      [] {
        PyObject* callbacks = subactor::AtexitCallbacks();
        if (callbacks == nullptr) throw py::error_already_set();
        return py::reinterpret_steal<py::list>(callbacks);
      },
      "The calling interpreter's registered Python atexit callbacks as (func, args, kwargs) tuples, in the "
      "order CPython will run them (the last registered first)");
  m.def("current_interpreter_id", &CurrentInterpreterId, "The id of the calling interpreter");
  m.def(
      "set_trim_after_finalize", &subactor::SetTrimAfterFinalize, py::arg("enabled"),
      "Whether the last of a run of interpreter finalizations hands the C heap's free memory back to the OS "
      "(malloc_trim on its worker thread, without the GIL)");
  m.def("trim_after_finalize", &subactor::TrimAfterFinalize, "See set_trim_after_finalize");
  m.def(
      "trim_memory", [] { return malloc_trim(0) != 0; }, py::call_guard<py::gil_scoped_release>(),
      "Hand the C heap's free memory back to the OS now (malloc_trim, without the GIL); True if any was");
  m.def(
      "release_free_pools",
      [] {
        const subactor::HeapRelease released = subactor::ReleaseFreeObmallocPools();
        return py::make_tuple(released.pools, released.bytes);
      },
      "Give the pages of the free pools of CPython's small-object allocator back to the OS (all but each "
      "pool's first page), under the GIL: (pools, bytes); (0, 0) unless the allocator is pymalloc");
  subactor::BindSocketIo(m);
  subactor::BindShelf(m);
}
