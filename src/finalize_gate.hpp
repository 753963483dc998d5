// When a done interpreter may be finalized: off the path of whoever is still using the shared GIL.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

namespace subactor {

// Py_EndInterpreter of an interpreter with trio imported holds the shared GIL for ~35 ms, mostly in C (module
// teardown, full GC passes) that never checks for a GIL drop request: every other thread of the process, the
// parent that was just told the actor is done included, waits until it is over. So a done interpreter does
// not finalize at once; its worker (holding no GIL) waits here for its turn
// (conc-anal/subint-finalization-off-the-teardown-path.md):
// - one finalization at a time, in the order they got here (they would serialize on the GIL anyway, and in
//   between the rest of the process gets the GIL back);
// - the head of the line goes when the GIL has been free for `quiet_window` (the process is idle: a teardown
//   in progress keeps it busy), or when `max_deferral` has passed since it became the head or since the last
//   finalization ended, whichever is later (a busy process still finalizes, one per `max_deferral` at most
//   often), or at once while someone waits for an interpreter to finish (Hurry(): a join with a timeout, the
//   exit hook);
// - a finalization still running after `stuck_after` (blocked in a __del__, say) no longer holds up the line.
// The GIL is sampled every `quiet_sample` by the head of the line only; the others sleep on a condition.
//
// Typical usage (worker thread, GIL released):
//   auto turn = FinalizeGate::Get().Enter(&gil->locked);
//   ... take the GIL, Py_EndInterpreter ...
//   FinalizeGate::Get().Leave(turn);
class FinalizeGate {
 public:
  using Clock = std::chrono::steady_clock;
  struct Timing {
    std::chrono::microseconds quiet_sample;
    std::chrono::microseconds quiet_window;
    std::chrono::microseconds max_deferral;
    std::chrono::microseconds stuck_after;
  };
  static constexpr Timing kTiming{std::chrono::microseconds(250), std::chrono::milliseconds(2),
                                  std::chrono::milliseconds(100), std::chrono::seconds(1)};

  // The process-wide gate every interpreter's worker uses.
  static FinalizeGate& Get();
  explicit FinalizeGate(Timing timing = kTiming) : timing_(timing) {}
  FinalizeGate(const FinalizeGate&) = delete;
  FinalizeGate& operator=(const FinalizeGate&) = delete;

  // Blocks until the caller may finalize; returns the token for Leave(). gil_locked: the shared GIL's
  // "locked" word (read atomically, never written). Call WITHOUT the GIL.
  Clock::time_point Enter(const int* gil_locked);
  // True when nobody else is finalizing or waiting to (the last of a run of finalizations).
  bool Leave(Clock::time_point token);

  // +1 while a thread waits for some interpreter to finish, -1 when it stops waiting.
  void Hurry(int delta);
  bool Hurrying();

 private:
  bool LaneFree(Clock::time_point now) const;  // REQUIRES(mu_)

  const Timing timing_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ticket_ = 0;                          // GUARDED_BY(mu_)
  uint64_t head_ = 0;                                 // GUARDED_BY(mu_): the ticket whose turn it is
  std::vector<Clock::time_point> active_;             // GUARDED_BY(mu_): when each running one started
  Clock::time_point last_end_ = Clock::time_point{};  // GUARDED_BY(mu_)
  int hurry_ = 0;                                     // GUARDED_BY(mu_)
};

}  // namespace subactor
