// An interpreter handle: one legacy-config subinterpreter whose whole life runs on one dedicated OS thread.
#pragma once

#include <Python.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace subactor {

// starting -> running -> ending -> finished; abandoned: given up on before finishing (it may still end
// later).
enum class State { kStarting, kRunning, kEnding, kFinished, kAbandoned };

const char* StateName(State state);

// How the bootstrap ended. ok: it returned, or raised SystemExit(0)/SystemExit(None).
struct Outcome {
  bool ok = false;
  std::optional<int> exit_code;            // 0 on return, SystemExit's code; unset for any other exception
  std::optional<std::string> exc_type;     // "ValueError", "pkg.mod.Error" (no builtins./__main__.)
  std::optional<std::string> exc_message;  // str(exc)
  std::optional<std::string> traceback;    // traceback.format_exception() text
};

// A point-in-time view of a handle, for live(), dumps and shutdown reports.
struct Snapshot {
  std::string name;
  std::optional<int64_t> id;
  std::optional<uint64_t> thread_id;  // native (kernel) thread id
  int64_t parent_id = -1;             // interpreter that spawned it; -1 when spawned without a GIL
  State state = State::kStarting;
  double running_for = 0;
};

// Design (the concurrency is subtle; conc-anal/subint-destroy-race.md has the history):
// - The worker thread creates, runs and ends the interpreter. Nothing else ever ends it, because ending an
//   interpreter while another thread still executes in it crashes (measured: 1 run in 15 segfaults).
// - After the bootstrap returns, the worker waits for EVERY other thread of the interpreter to be gone
//   (non-daemon threads via threading._shutdown, then daemon and raw _thread threads). There is no bound: a
//   daemon thread stuck in C keeps the handle "running"; the parent sees that through its bounded join() or
//   wait_done(), can interrupt() (which reaches every thread of the interpreter) and finally abandon() it.
// - Two milestones, two eventfds (conc-anal/subint-finalization-off-the-teardown-path.md). "Done": the
//   bootstrap returned, the threads are gone and the worker ran the interpreter's Python atexit callbacks
//   itself (atexit._run_exitfuncs() clears them, so Py_EndInterpreter does not run them again): the outcome
//   is recorded, done_fd is written and the state is "ending". "Finished": Py_EndInterpreter (tens of ms of
//   module teardown and GC under the shared GIL) has returned: state "finished", exit_fd written, the
//   handle leaves the registry. An actor is over at done; only its interpreter's memory is left to free.
// - Between the two the worker waits, without the GIL, in the FinalizeGate (finalize_gate.hpp): finalization
//   holds the GIL in C for ~35 ms without yielding it, so started at done it would keep the very parent that
//   was just told "done" from running. It starts once the GIL has been quiet, one interpreter at a time, at
//   most ~100 ms late in a busy process, and at once while someone is in Join() with a timeout (the exit
//   hook, a test); Join(0) is a probe and does not hurry it.
// - Locks: mu_ is a leaf lock. Never acquire the GIL while holding mu_ (the worker takes mu_ while holding
//   the GIL). The worker sets ending_ (at done) under the GIL, in the same GIL hold as its last look for
//   other thread states, and runs no Python code of the interpreter after it; Interrupt() reads it under the
//   GIL, so an interrupt never touches an interpreter that is being torn down, and an ending interpreter
//   refuses interrupts. The gate's lock is taken without the GIL and without mu_.
// - done_fd and exit_fd are eventfds, each written once (under mu_, never once closed_); nobody reads them,
//   so they stay readable. Close() of a finished or abandoned handle closes both at once, under mu_. Close()
//   of an ending handle only marks it closed: the worker closes both fds itself when it finishes (and writes
//   neither), so no descriptor is written after close and no number is reused while the interpreter lives.
//
// Typical usage:
//   auto interp = Interpreter::Spawn("import mod; mod.main()", "worker-1", /*parent_id=*/0);
//   if (!interp->WaitDone(5.0)) { /* with the GIL: */ interp->Interrupt(PyExc_KeyboardInterrupt, true); }
//   if (!interp->WaitDone(1.0)) interp->Abandon();
//   interp->Close();  // fine while it is still ending: it releases the fds when it finishes
class Interpreter : public std::enable_shared_from_this<Interpreter> {
 public:
  // Starts the worker thread at once; the handle is "starting" until the interpreter exists.
  static std::shared_ptr<Interpreter> Spawn(std::string code, std::string name, int64_t parent_id);

  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;
  ~Interpreter();

  const std::string& name() const { return name_; }
  // "interpreter 3", or "interpreter 'name'" before the id is known: the subject of error messages.
  std::string Label() const;
  Snapshot Snap() const;
  State state() const;
  std::optional<Outcome> outcome() const;  // set from done on
  bool closed() const;
  int exit_fd() const;  // -1 once closed
  int done_fd() const;  // -1 once closed

  // Waits up to timeout seconds for the worker to finish, then reaps its OS thread. Returns whether it
  // finished; idempotent once true. Works on a closed handle too. While it waits (timeout > 0), done
  // interpreters finalize without waiting for a quiet GIL (FinalizeGate::Hurry). Call WITHOUT the GIL (the
  // worker needs it to finish).
  bool Join(double timeout);

  // Waits up to timeout seconds for the interpreter to be done (ending or finished: the outcome is set).
  // Call WITHOUT the GIL.
  bool WaitDone(double timeout);

  // Raises exc (a static builtin exception type) in the interpreter's main thread and, with all_threads,
  // in every other thread of it. A still-starting interpreter raises it as soon as it starts. Returns
  // false when the interpreter is finished or ending. Call WITH the GIL (any interpreter).
  bool Interrupt(PyObject* exc, bool all_threads);

  // Gives up on a worker stuck in C: it is reported as abandoned and never waited for again. Returns false
  // if it had already finished.
  bool Abandon();

  // Makes parent_id the interpreter now responsible for this one (a pooled interpreter lent to another
  // interpreter: that one's exit sweep covers it from then on).
  void Adopt(int64_t parent_id);

  // Releases done_fd and exit_fd: at once when finished or abandoned; when ending, the worker closes them
  // as it finishes. Returns false (and does nothing) while starting or running. Idempotent.
  bool Close();

 private:
  Interpreter(std::string code, std::string name, int64_t parent_id);
  void Run();
  void RunEpilogueSnippet(const char* code, const char* filename, const char* failing_to);
  void WaitForOtherThreads();
  void WaitForOtherThreadStates();
  void RunAtexitCallbacks();
  void MarkDone(Outcome outcome);
  void Finish();

  const std::string code_;
  const std::string name_;
  int64_t parent_id_;  // GUARDED_BY(mu_)
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex mu_;
  std::condition_variable cv_;                         // done_ or finished_ became true
  State state_ = State::kStarting;                     // GUARDED_BY(mu_)
  bool done_ = false;                                  // GUARDED_BY(mu_): outcome recorded, done_fd written
  bool finished_ = false;                              // GUARDED_BY(mu_): worker past its last step
  bool ending_ = false;                                // GUARDED_BY(mu_), written with the GIL held
  bool closed_ = false;                                // GUARDED_BY(mu_)
  int done_fd_ = -1;                                   // GUARDED_BY(mu_)
  int exit_fd_ = -1;                                   // GUARDED_BY(mu_)
  std::optional<Outcome> outcome_;                     // GUARDED_BY(mu_): set when done_
  std::optional<int64_t> id_;                          // GUARDED_BY(mu_)
  std::optional<uint64_t> native_tid_;                 // GUARDED_BY(mu_)
  unsigned long py_thread_ident_ = 0;                  // GUARDED_BY(mu_): PyThread_get_thread_ident()
  PyInterpreterState* interp_ = nullptr;               // GUARDED_BY(mu_), valid while !ending_
  PyObject* pending_exc_ = nullptr;                    // GUARDED_BY(mu_): interrupt before start
  std::chrono::steady_clock::time_point finished_at_;  // GUARDED_BY(mu_)

  std::mutex reap_mu_;  // serializes joining/detaching thread_
  std::thread thread_;  // GUARDED_BY(reap_mu_)
};

// Callbacks run on every worker thread around Py_EndInterpreter: `before` with the interpreter's thread state
// current and the GIL held, as the last step before it; `after` once Py_EndInterpreter has returned (no
// thread state, no GIL), only if `before` returned true. The worker thread exits right after. The extension
// installs the recipe that frees pybind11's per-interpreter internals (module.cpp); the core knows nothing of
// pybind11. Either may be null. Installing is thread-safe; a worker reads both once, before calling `before`.
struct EndHooks {
  bool (*before)() = nullptr;
  void (*after)() = nullptr;
};
void SetEndHooks(EndHooks hooks);

// Whether the worker that ends the last of a run of finalizations (nobody else finalizing or waiting to) then
// hands the C heap's free memory back to the OS (malloc_trim, without the GIL). Ended interpreters free most
// of what they allocated, but into glibc arenas of threads that are gone, which keep it resident otherwise.
// The Python layer decides (off by default here); thread-safe.
void SetTrimAfterFinalize(bool enabled);
bool TrimAfterFinalize();

// A new list with the calling interpreter's registered Python atexit callbacks, as (func, args, kwargs)
// tuples, in the order CPython will run them (the last registered first). Introspection for the exit
// hook's policy (_driver.py), which must run the callbacks still due before it leaves with os._exit().
// nullptr with an exception set on failure. Call WITH the GIL.
PyObject* AtexitCallbacks();

// The static builtin exception type named `name` (a BaseException subclass in builtins), or nullptr.
// Static types are shared by every interpreter, so the result may be raised in any of them.
PyObject* BuiltinExceptionType(const std::string& name);

}  // namespace subactor
