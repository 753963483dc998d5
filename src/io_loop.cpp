// The driver's Asio io thread: cancelable deadline timers, interrupt_after and the hang watchdog.
#include "io_loop.hpp"

#include <unistd.h>

#include <algorithm>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "interpreter.hpp"
#include "stacks.hpp"
#include "task_dumpers.hpp"

namespace subactor {
namespace {

// An armed watchdog stays in the table until it is disarmed in time or its dump is complete, so a late
// DisarmWatchdog can wait for the dump instead of reading half a file.
std::mutex watchdogs_mu;
std::condition_variable watchdogs_cv;  // notified when a fired watchdog's dump is complete
std::map<int64_t, std::shared_ptr<Timer>>* watchdogs =
    new std::map<int64_t, std::shared_ptr<Timer>>();  // GUARDED_BY(watchdogs_mu), leaked like the loop
int64_t next_watchdog_id = 1;                         // GUARDED_BY(watchdogs_mu)

void WatchdogDump(const std::string& path) {
  std::FILE* out = std::fopen(path.c_str(), "a");
  if (out == nullptr) {
    std::fprintf(stderr, "subactor: watchdog cannot open '%s'\n", path.c_str());
    return;
  }
  std::fprintf(out, "=== subactor watchdog stack dump: pid %d, most recent call last ===\n",
               static_cast<int>(getpid()));
  WriteDriverView(out);
  std::fflush(out);  // on disk even if the GIL never comes (a thread holding it in C forever)
  if (!WithGil([out, &path] { WriteHookOrStacks(out, "watchdog", path); })) {
    std::fputs("(runtime finalizing: stacks not read)\n", out);
  }
  std::fputs(kDumpEnd, out);
  std::fclose(out);
}

}  // namespace

void WriteHookOrStacks(std::FILE* out, const char* kind, const std::string& path) {
  if (auto dump = CallDumpHook(kind, path)) {
    if (dump->ok) {
      std::fwrite(dump->text.data(), 1, dump->text.size(), out);
      return;
    }
    std::fprintf(out, "(the dump hook failed: %s; thread stacks only)\n", dump->text.c_str());
  }
  WriteStacks(out);
}

bool Timer::Cancel() {
  int expected = kPending;
  if (!state_.compare_exchange_strong(expected, kCancelled)) return false;
  // The steady_timer belongs to the io thread: cancel it there, which also frees the callback.
  auto& ctx = static_cast<asio::io_context&>(timer_.get_executor().context());
  asio::post(ctx, [self = shared_from_this()] { self->timer_.cancel(); });
  return true;
}

IoLoop::IoLoop() {
  std::thread([this] {
    auto guard = asio::make_work_guard(ctx_);
    ctx_.run();
  }).detach();
}

IoLoop& IoLoop::Get() {
  static IoLoop* loop = new IoLoop();  // leaked on purpose: see the class comment
  return *loop;
}

std::shared_ptr<Timer> IoLoop::After(double seconds, std::function<void()> fn) {
  auto timer = std::make_shared<Timer>(ctx_);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                             std::chrono::duration<double>(std::clamp(seconds, 0.0, 1e7)));
  asio::post(ctx_, [timer, deadline, fn = std::move(fn)]() mutable {
    timer->timer_.expires_at(deadline);
    timer->timer_.async_wait([timer, fn = std::move(fn)](const std::error_code&) {
      int expected = Timer::kPending;
      if (timer->state_.compare_exchange_strong(expected, Timer::kFired)) fn();
    });
  });
  return timer;
}

bool WithGil(const std::function<void()>& fn) {
  if (!Py_IsInitialized() || Py_IsFinalizing()) return false;
  const PyGILState_STATE gil = PyGILState_Ensure();
  fn();
  PyGILState_Release(gil);
  return true;
}

std::shared_ptr<Timer> InterruptAfter(std::shared_ptr<Interpreter> handle, double seconds, PyObject* exc) {
  return IoLoop::Get().After(seconds, [handle = std::move(handle), exc] {
    WithGil([&] { handle->Interrupt(exc, /*all_threads=*/true); });
  });
}

int64_t ArmWatchdog(double seconds, std::string path) {
  std::lock_guard lock(watchdogs_mu);
  const int64_t id = next_watchdog_id++;
  (*watchdogs)[id] = IoLoop::Get().After(seconds, [id, path = std::move(path)] {
    WatchdogDump(path);
    std::lock_guard lock(watchdogs_mu);
    watchdogs->erase(id);
    watchdogs_cv.notify_all();
  });
  return id;
}

bool DisarmWatchdog(int64_t id, double wait) {
  std::unique_lock lock(watchdogs_mu);
  auto it = watchdogs->find(id);
  if (it == watchdogs->end()) return false;
  if (it->second->Cancel()) {
    watchdogs->erase(it);
    return true;
  }
  // It fired: its dump is being written (and may need the GIL, which the caller must not hold).
  const auto bound = std::chrono::duration<double>(std::clamp(wait, 0.0, 1e7));
  watchdogs_cv.wait_for(lock, bound, [id] { return !watchdogs->contains(id); });
  return false;
}

}  // namespace subactor

namespace subactor {

bool WaitWatchdog(int64_t id, double timeout) {
  std::unique_lock lock(watchdogs_mu);
  auto it = watchdogs->find(id);
  if (it == watchdogs->end()) return true;  // fired and complete (or disarmed already)
  const auto bound = std::chrono::duration<double>(std::clamp(timeout, 0.0, 1e7));
  return watchdogs_cv.wait_for(lock, bound, [id] { return !watchdogs->contains(id); });
}

}  // namespace subactor
