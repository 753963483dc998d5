// The interpreter handle's worker thread (create, run, wait for threads, atexit, done, end) and its interrupt
// recipe.
//
// Compiled with Py_BUILD_CORE_MODULE (CMakeLists.txt) for the exported-but-internal running-main marks and
// the shared GIL's "locked" word (read by the finalize gate).
#include "interpreter.hpp"

#include <internal/pycore_interp_structs.h>  // interp->ceval.gil, for the finalize gate
#include <internal/pycore_pystate.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <initializer_list>
#include <system_error>
#include <utility>
#include <vector>

#include "finalize_gate.hpp"
#include "heap_release.hpp"
#include "registry.hpp"

namespace subactor {
namespace {

// Runs after the bootstrap, inside the interpreter, in a scratch namespace. Joins non-daemon threads
// (threading._shutdown), then every other threading.Thread: threads started from a foreign OS thread
// default to daemon, so "daemon" does not mean "may be left behind" here. Py_EndInterpreter would run
// threading._shutdown again; that is harmless.
constexpr char kEpilogue[] = R"(
import sys
threading = sys.modules.get('threading')
if threading is not None:
    threading._shutdown()
    me = threading.current_thread()
    main = threading.main_thread()
    for t in threading.enumerate():
        if t is not me and t is not main and not isinstance(t, threading._DummyThread):
            t.join()
)";

// Runs after every other thread is gone, inside the interpreter, in a scratch namespace: the interpreter's
// Python atexit callbacks, while it is still the actor's (CPython's own order too: threads, then atexit).
// _run_exitfuncs() reports a failing callback as unraisable, goes on, and clears the list afterwards, so
// Py_EndInterpreter finds nothing left to run (C-level PyUnstable_AtExit callbacks stay with it).
constexpr char kAtexit[] = R"(
import atexit
atexit._run_exitfuncs()
)";

// Runs after each snippet above: what the actor's threads or atexit callbacks printed reaches the fds now.
constexpr char kFlushStdio[] = R"(
import sys
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except Exception:
        pass
)";

// Runs last before Py_EndInterpreter: objects that gc.freeze() moved to the permanent generation (the runtime
// freezes what its start-up imported; user code may freeze too) are left out of every collection, ending's
// included, so ending with them frozen leaks them all (~11 MiB per interpreter with trio imported).
constexpr char kThawFrozenObjects[] = R"(
import gc
gc.unfreeze()
)";

// Makes an eventfd readable (the counter goes from 0 to 1; nobody reads it back).
void Signal(int fd) {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
}

std::string Utf8(PyObject* obj, const char* fallback) {
  if (obj != nullptr) {
    Py_ssize_t size = 0;
    if (const char* data = PyUnicode_AsUTF8AndSize(obj, &size)) return std::string(data, size);
  }
  PyErr_Clear();
  return fallback;
}

std::string StrOf(PyObject* obj) {
  PyObject* text = PyObject_Str(obj);
  std::string out = Utf8(text, "<unprintable>");
  Py_XDECREF(text);
  return out;
}

std::string FormatTraceback(PyObject* exc) {
  std::string out;
  PyObject* module = PyImport_ImportModule("traceback");
  PyObject* lines = module ? PyObject_CallMethod(module, "format_exception", "O", exc) : nullptr;
  PyObject* empty = lines ? PyUnicode_FromString("") : nullptr;
  PyObject* text = empty ? PyUnicode_Join(empty, lines) : nullptr;
  out = Utf8(text, "<traceback unavailable>");
  Py_XDECREF(text);
  Py_XDECREF(empty);
  Py_XDECREF(lines);
  Py_XDECREF(module);
  return out;
}

// Consumes the raised exception into outcome. SystemExit(0) and SystemExit(None) count as a clean exit.
void CaptureRaised(Outcome& outcome) {
  PyObject* exc = PyErr_GetRaisedException();
  if (exc == nullptr) return;
  if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)) {
    PyObject* code = PyObject_GetAttrString(exc, "code");
    PyErr_Clear();
    if (code == nullptr || code == Py_None) {
      outcome.exit_code = 0;
    } else if (PyLong_Check(code)) {
      int overflow = 0;
      const long value = PyLong_AsLongAndOverflow(code, &overflow);
      outcome.exit_code = overflow ? 1 : static_cast<int>(value);
    } else {
      outcome.exit_code = 1;  // sys.exit("message"), as the main interpreter would exit
    }
    Py_XDECREF(code);
    outcome.ok = *outcome.exit_code == 0;
  }
  if (!outcome.ok) {
    PyObject* type_name = PyType_GetFullyQualifiedName(Py_TYPE(exc));
    outcome.exc_type = Utf8(type_name, "<unknown>");
    Py_XDECREF(type_name);
    outcome.exc_message = StrOf(exc);
    outcome.traceback = FormatTraceback(exc);
  }
  Py_DECREF(exc);
  PyErr_Clear();
}

// Runs source in a fresh namespace (or __main__'s), leaving any exception raised.
bool Exec(const char* source, const char* filename, bool in_main) {
  PyObject* globals = nullptr;
  if (in_main) {
    PyObject* main = PyImport_AddModuleRef("__main__");
    if (main == nullptr) return false;
    globals = Py_NewRef(PyModule_GetDict(main));
    Py_DECREF(main);
  } else {
    globals = PyDict_New();
    if (globals == nullptr || PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
      Py_XDECREF(globals);
      return false;
    }
  }
  PyObject* code = Py_CompileString(source, filename, Py_file_input);
  PyObject* result = code ? PyEval_EvalCode(code, globals, globals) : nullptr;
  Py_XDECREF(result);
  Py_XDECREF(code);
  Py_DECREF(globals);
  return result != nullptr;
}

std::atomic<bool> trim_after_finalize{false};

// After the last of a run of finalizations, on the worker (no thread state, no GIL): the free obmalloc pools'
// pages, under the GIL with a temporary thread state of the main interpreter (whose allocator legacy
// interpreters share), then the C heap's free memory. Skipped while the process is finalizing or someone
// waits for interpreters to finish (the exit hook): taking the GIL then could block this thread for good, and
// nobody will use the memory.
void GiveBackFreedMemory() {
  if (Py_IsFinalizing() || FinalizeGate::Get().Hurrying()) return;
  PyThreadState* temp = PyThreadState_New(PyInterpreterState_Main());
  if (temp == nullptr) return;
  PyEval_RestoreThread(temp);
  ReleaseFreeObmallocPools([] { PyEval_RestoreThread(PyEval_SaveThread()); });
  PyThreadState_Clear(temp);
  PyThreadState_DeleteCurrent();
  malloc_trim(0);
}

std::mutex end_hooks_mu;
EndHooks end_hooks;  // GUARDED_BY(end_hooks_mu)

EndHooks CurrentEndHooks() {
  std::lock_guard lock(end_hooks_mu);
  return end_hooks;
}

}  // namespace

void SetTrimAfterFinalize(bool enabled) { trim_after_finalize.store(enabled); }
bool TrimAfterFinalize() { return trim_after_finalize.load(); }

void SetEndHooks(EndHooks hooks) {
  std::lock_guard lock(end_hooks_mu);
  end_hooks = hooks;
}

const char* StateName(State state) {
  switch (state) {
    case State::kStarting:
      return "starting";
    case State::kRunning:
      return "running";
    case State::kEnding:
      return "ending";
    case State::kFinished:
      return "finished";
    case State::kAbandoned:
      return "abandoned";
  }
  return "?";
}

PyObject* AtexitCallbacks() {
  // CPython 3.14 keeps them in interp->atexit.callbacks (pycore_interp_structs.h), a list that register()
  // inserts at the front of and _PyAtExit_Call runs from the front: stored order is run order.
  PyObject* callbacks = PyThreadState_GetInterpreter(PyThreadState_Get())->atexit.callbacks;
  if (callbacks == nullptr || !PyList_Check(callbacks)) return PyList_New(0);
  return PyList_GetSlice(callbacks, 0, PyList_GET_SIZE(callbacks));
}

PyObject* BuiltinExceptionType(const std::string& name) {
  PyObject* builtins = PyImport_ImportModule("builtins");
  PyObject* type = builtins ? PyObject_GetAttrString(builtins, name.c_str()) : nullptr;
  Py_XDECREF(builtins);
  PyErr_Clear();
  const bool ok = type != nullptr && PyType_Check(type) &&
                  !(PyType_GetFlags(reinterpret_cast<PyTypeObject*>(type)) & Py_TPFLAGS_HEAPTYPE) &&
                  PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(type),
                                   reinterpret_cast<PyTypeObject*>(PyExc_BaseException));
  Py_XDECREF(type);  // static types are immortal: the pointer stays valid
  return ok ? type : nullptr;
}

Interpreter::Interpreter(std::string code, std::string name, int64_t parent_id)
    : code_(std::move(code)), name_(std::move(name)), parent_id_(parent_id) {}

std::shared_ptr<Interpreter> Interpreter::Spawn(std::string code, std::string name, int64_t parent_id) {
  std::shared_ptr<Interpreter> handle(new Interpreter(std::move(code), std::move(name), parent_id));
  for (int* fd : {&handle->done_fd_, &handle->exit_fd_}) {
    *fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (*fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");  // ~Interpreter closes
  }
  Registry::Get().Add(handle);
  std::lock_guard reap(handle->reap_mu_);
  try {
    handle->thread_ = std::thread([handle] { handle->Run(); });
  } catch (...) {
    Registry::Get().Remove(handle.get());
    throw;
  }
  return handle;
}

Interpreter::~Interpreter() {
  // Only the last owner gets here, and the worker owns a reference until it is done, so a not-done
  // worker can only be this very thread (the worker dropping the last reference): detach it.
  std::lock_guard reap(reap_mu_);
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }
  for (int fd : {done_fd_, exit_fd_}) {
    if (fd >= 0) ::close(fd);
  }
}

std::string Interpreter::Label() const {
  std::lock_guard lock(mu_);
  if (id_) return "interpreter " + std::to_string(*id_);
  return "interpreter '" + name_ + "'";
}

Snapshot Interpreter::Snap() const {
  std::lock_guard lock(mu_);
  const auto end = finished_ ? finished_at_ : std::chrono::steady_clock::now();
  return Snapshot{name_,      id_,    native_tid_,
                  parent_id_, state_, std::chrono::duration<double>(end - started_).count()};
}

void Interpreter::Adopt(int64_t parent_id) {
  std::lock_guard lock(mu_);
  parent_id_ = parent_id;
}

State Interpreter::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::optional<Outcome> Interpreter::outcome() const {
  std::lock_guard lock(mu_);
  return outcome_;
}

bool Interpreter::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

int Interpreter::exit_fd() const {
  std::lock_guard lock(mu_);
  return closed_ ? -1 : exit_fd_;
}

int Interpreter::done_fd() const {
  std::lock_guard lock(mu_);
  return closed_ ? -1 : done_fd_;
}

bool Interpreter::WaitDone(double timeout) {
  std::unique_lock lock(mu_);
  const auto wait = std::chrono::duration<double>(std::clamp(timeout, 0.0, 1e7));
  return cv_.wait_for(lock, wait, [this] { return done_; });
}

bool Interpreter::Join(double timeout) {
  const auto wait = std::chrono::duration<double>(std::clamp(timeout, 0.0, 1e7));
  bool finished = false;
  {
    std::lock_guard lock(mu_);
    finished = finished_;
  }
  if (!finished) {
    if (wait.count() == 0) return false;
    // Someone waits for a finish: done interpreters finalize at once rather than when the GIL is quiet.
    struct Hurrying {
      Hurrying() { FinalizeGate::Get().Hurry(+1); }
      ~Hurrying() { FinalizeGate::Get().Hurry(-1); }
    } hurrying;
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, wait, [this] { return finished_; })) return false;
  }
  // The worker's last step was signalling done: reaping its OS thread takes microseconds.
  std::lock_guard reap(reap_mu_);
  if (thread_.joinable()) thread_.join();
  return true;
}

bool Interpreter::Abandon() {
  std::optional<int64_t> id;
  {
    std::lock_guard lock(mu_);
    if (finished_) return false;
    state_ = State::kAbandoned;
    id = id_;
  }
  if (id) Registry::Get().Retired(*id);  // its stuck thread may never run Python again
  return true;
}

bool Interpreter::Close() {
  bool finished = false;
  {
    std::lock_guard lock(mu_);
    if (!done_ && state_ != State::kAbandoned) return false;
    closed_ = true;
    finished = finished_;
    // Ending (not abandoned): the worker closes both fds when it finishes. Finished or abandoned (a stuck
    // worker may never finish): close them now; the worker never writes a descriptor once closed_.
    if (finished || state_ == State::kAbandoned) {
      for (int* fd : {&done_fd_, &exit_fd_}) {
        if (*fd >= 0) ::close(*fd);
        *fd = -1;
      }
    }
  }
  if (finished) Join(0);
  return true;
}

bool Interpreter::Interrupt(PyObject* exc, bool all_threads) {
  PyInterpreterState* interp = nullptr;
  unsigned long main_ident = 0;
  {
    std::lock_guard lock(mu_);
    if (finished_ || ending_) return false;
    if (interp_ == nullptr) {  // still starting: the worker raises it instead of running the bootstrap
      pending_exc_ = exc;
      return true;
    }
    interp = interp_;
    main_ident = py_thread_ident_;
  }
  // PyThreadState_SetAsyncExc only searches the current interpreter: borrow a temporary thread state in the
  // target interpreter (unless we already run in it). interp stays valid until we return: we checked ending_
  // and create the temporary thread state under one GIL hold, and from then until it is deleted the worker
  // cannot end the interpreter, because it waits for every other thread state to be gone (the swaps below
  // release the GIL, so it may well see this one: WaitForOtherThreadStates). conc-anal/subint-destroy-race.md
  PyThreadState* caller = PyThreadState_Get();
  PyThreadState* temp = nullptr;
  if (PyThreadState_GetInterpreter(caller) != interp) {
    temp = PyThreadState_New(interp);
    PyThreadState_Swap(temp);
  }
  std::vector<unsigned long> idents{main_ident};
  if (all_threads) {
    for (PyThreadState* ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts)) {
      if (ts != temp && std::find(idents.begin(), idents.end(), ts->thread_id) == idents.end()) {
        idents.push_back(ts->thread_id);
      }
    }
  }
  int hits = 0;
  for (unsigned long ident : idents) hits += PyThreadState_SetAsyncExc(ident, exc);
  if (temp != nullptr) {
    PyThreadState_Clear(temp);
    PyThreadState_Swap(caller);
    PyThreadState_Delete(temp);
  }
  return hits > 0;
}

void Interpreter::Run() {
  {
    std::lock_guard lock(mu_);
    native_tid_ = static_cast<uint64_t>(gettid());
    py_thread_ident_ = PyThread_get_thread_ident();
  }
  PyInterpreterConfig config{};
  config.use_main_obmalloc = 1;
  config.allow_fork = 1;
  config.allow_exec = 1;
  config.allow_threads = 1;
  config.allow_daemon_threads = 1;
  config.check_multi_interp_extensions = 0;
  config.gil = PyInterpreterConfig_SHARED_GIL;
  PyThreadState* tstate = nullptr;
  const PyStatus status = Py_NewInterpreterFromConfig(&tstate, &config);
  if (PyStatus_Exception(status) || tstate == nullptr) {
    Outcome failed;
    failed.exc_type = "InterpreterError";
    failed.exc_message = status.err_msg ? status.err_msg : "cannot create the interpreter";
    MarkDone(std::move(failed));
    Finish();
    return;
  }
  // From here on this thread holds the GIL with the new interpreter's thread state current.
  PyInterpreterState* interp = PyThreadState_GetInterpreter(tstate);
  if (_PyInterpreterState_SetRunningMain(interp) < 0) PyErr_Clear();
  PyObject* pending = nullptr;
  const int64_t id = PyInterpreterState_GetID(interp);
  {
    std::lock_guard lock(mu_);
    interp_ = interp;
    id_ = id;
    if (state_ == State::kStarting) state_ = State::kRunning;
    pending = std::exchange(pending_exc_, nullptr);
  }
  Outcome outcome;
  if (pending != nullptr) {
    PyErr_SetNone(pending);
  } else if (Exec(code_.c_str(), "<bootstrap>", /*in_main=*/true)) {
    outcome.ok = true;
    outcome.exit_code = 0;
  }
  CaptureRaised(outcome);
  WaitForOtherThreads();
  RunAtexitCallbacks();
  WaitForOtherThreadStates();  // a callback may have started a thread
  // With the GIL held: no Interrupt() is inside this interpreter now, and none will enter (ending_).
  MarkDone(std::move(outcome));
  PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), nullptr);  // drop a late interrupt
  PyErr_Clear();
  Registry::Get().Retired(id);
  // Finalize when the GIL is not wanted elsewhere (finalize_gate.hpp), waiting without it. The interpreter
  // stays marked as running meanwhile, so _interpreters.destroy() refuses it.
  const int* gil_locked = &interp->ceval.gil->locked;
  PyThreadState* detached = PyEval_SaveThread();
  const auto turn = FinalizeGate::Get().Enter(gil_locked);
  PyEval_RestoreThread(detached);
  if (!Exec(kThawFrozenObjects, "<subactor thaw>", /*in_main=*/false)) {
    PyErr_FormatUnraisable("Exception ignored while thawing the frozen objects of %s", name_.c_str());
  }
  _PyInterpreterState_SetNotRunningMain(interp);
  const EndHooks hooks = CurrentEndHooks();
  const bool after_end = hooks.before != nullptr && hooks.before();
  Py_EndInterpreter(tstate);  // returns with no thread state and the GIL released
  const bool last_in_line = FinalizeGate::Get().Leave(turn);
  if (after_end && hooks.after != nullptr) hooks.after();
  if (last_in_line && TrimAfterFinalize()) GiveBackFreedMemory();
  Registry::Get().SetLabel(id, "");
  Finish();
}

void Interpreter::RunEpilogueSnippet(const char* code, const char* filename, const char* failing_to) {
  // An interrupt raised into this thread while a snippet runs breaks it: run it again (the snippets are
  // idempotent: joining threads, atexit, whose list is cleared once its last callback ran, so none runs
  // twice, and flushing). A genuine error is reported and the caller's next step takes over. The standard
  // streams are flushed after `code` either way.
  for (const char* snippet : {code, kFlushStdio}) {
    for (;;) {
      if (Exec(snippet, filename, /*in_main=*/false)) break;
      if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_FormatUnraisable("Exception ignored while %s of %s", failing_to, name_.c_str());
        break;
      }
      PyErr_Clear();
    }
  }
}

void Interpreter::WaitForOtherThreads() {
  // The interrupt that breaks the join also reached the threads we wait for; the C-level wait comes last.
  RunEpilogueSnippet(kEpilogue, "<subactor epilogue>", "joining the threads");
  WaitForOtherThreadStates();
}

void Interpreter::WaitForOtherThreadStates() {
  // Threads that threading does not know about (_thread.start_new_thread, C threads): poll the thread
  // states, with the GIL released between looks. An interrupt's temporary thread state may be seen here
  // (PyThreadState_Swap releases the GIL while it exists): waiting for it to go is what keeps the interpreter
  // alive under the interrupter. The last look and MarkDone() (ending_) happen under one GIL hold.
  PyThreadState* self = PyThreadState_Get();
  PyInterpreterState* interp = PyThreadState_GetInterpreter(self);
  for (int delay_us = 50;; delay_us = std::min(delay_us * 2, 20000)) {
    bool others = false;
    for (PyThreadState* ts = PyInterpreterState_ThreadHead(interp); ts && !others;
         ts = PyThreadState_Next(ts)) {
      others = ts != self;
    }
    if (!others) break;
    Py_BEGIN_ALLOW_THREADS;
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    Py_END_ALLOW_THREADS;
  }
}

void Interpreter::RunAtexitCallbacks() {
  // A callback's own exception is reported by atexit and the next one runs; only an interrupt landing
  // outside a callback breaks the snippet.
  RunEpilogueSnippet(kAtexit, "<subactor atexit>", "running the atexit callbacks");
}

void Interpreter::MarkDone(Outcome outcome) {
  std::lock_guard lock(mu_);
  outcome_ = std::move(outcome);
  done_ = true;
  ending_ = true;
  interp_ = nullptr;
  state_ = State::kEnding;  // an abandoned worker that got out of its C call after all is ending too
  if (!closed_ && done_fd_ >= 0) Signal(done_fd_);
  cv_.notify_all();
}

void Interpreter::Finish() {
  Registry::Get().Remove(this);  // before finished_: join() returning true implies live_count() excludes us
  std::lock_guard lock(mu_);
  state_ = State::kFinished;
  finished_ = true;
  finished_at_ = std::chrono::steady_clock::now();
  if (closed_) {  // closed while ending: the fds were left to us (or already closed if it was abandoned)
    for (int* fd : {&done_fd_, &exit_fd_}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  } else if (exit_fd_ >= 0) {
    Signal(exit_fd_);
  }
  cv_.notify_all();
}

}  // namespace subactor
