// The driver's own event loop: one lazily started Asio thread for deadlines the C++ side must keep.
#pragma once

#include <Python.h>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

namespace subactor {

class Interpreter;

// A one-shot deadline. Exactly one of Cancel() (returning true) and firing happens.
//
// Typical usage:
//   auto timer = IoLoop::Get().After(5.0, [] { ... });
//   if (timer->Cancel()) { /* it will never fire */ }
class Timer : public std::enable_shared_from_this<Timer> {
 public:
  explicit Timer(asio::io_context& ctx) : timer_(ctx) {}
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Returns true if the timer had neither fired nor been cancelled: it now never fires.
  bool Cancel();
  bool fired() const { return state_.load() == kFired; }

 private:
  friend class IoLoop;
  enum : int { kPending, kCancelled, kFired };
  std::atomic<int> state_{kPending};
  asio::steady_timer timer_;  // used on the io thread only
};

// One io_context run by one detached thread, started on first use and never stopped: it must outlive every
// worker and keep no process exit waiting. The callbacks run on that thread, one at a time.
//
// Design: the callbacks that need Python take the GIL through PyGILState_Ensure (a main-interpreter
// thread state of their own), so they run while the main thread is busy in Python: the eval loop hands
// the GIL over within the switch interval. A thread that holds the GIL in C forever blocks such a callback
// (and the ones queued behind it) until it lets go; the watchdog therefore writes the GIL-free part of its
// dump first. During interpreter finalization callbacks skip their Python part.
class IoLoop {
 public:
  static IoLoop& Get();
  std::shared_ptr<Timer> After(double seconds, std::function<void()> fn);
  asio::io_context& context() { return ctx_; }  // for I/O objects whose handlers run on the io thread

 private:
  IoLoop();
  asio::io_context ctx_;
};

// Runs fn with the GIL on a thread that has no thread state; returns false (without running fn) when the
// runtime is finalizing or not initialized.
bool WithGil(const std::function<void()>& fn);

// interrupt_after(): Interrupt(exc, all_threads) on handle after seconds, from the io thread.
std::shared_ptr<Timer> InterruptAfter(std::shared_ptr<Interpreter> handle, double seconds, PyObject* exc);

// With the GIL: the dump hook's text (task_dumpers.hpp) if one is set and it works, else WriteStacks.
void WriteHookOrStacks(std::FILE* out, const char* kind, const std::string& path);

// arm_watchdog(): unless disarmed within seconds, appends a dump (WriteDriverView, then with the GIL
// WriteStacks, then kDumpEnd) to path from the io thread. Returns an id for DisarmWatchdog.
int64_t ArmWatchdog(double seconds, std::string path);

// Returns true if the watchdog had not fired (it never will now). If it fired and its dump is still being
// written, waits up to `wait` seconds for the dump to be complete first. Call WITHOUT the GIL when wait > 0
// (the dump needs it).
bool DisarmWatchdog(int64_t id, double wait = 0);

// Waits up to timeout for the watchdog to have fired and its dump to be complete; true if it is (or the
// watchdog is gone: disarmed). Call WITHOUT the GIL (the dump needs it).
bool WaitWatchdog(int64_t id, double timeout);

}  // namespace subactor
