// The line done interpreters wait in before they finalize (see finalize_gate.hpp).
#include "finalize_gate.hpp"

#include <algorithm>
#include <atomic>

namespace subactor {

FinalizeGate& FinalizeGate::Get() {
  // Leaked on purpose, like the registry: an abandoned worker may reach it after static destruction.
  static FinalizeGate* gate = new FinalizeGate();
  return *gate;
}

bool FinalizeGate::LaneFree(Clock::time_point now) const {
  return std::all_of(active_.begin(), active_.end(),
                     [this, now](auto since) { return now - since >= timing_.stuck_after; });
}

FinalizeGate::Clock::time_point FinalizeGate::Enter(const int* gil_locked) {
  const int64_t quiet_samples = std::max<int64_t>(1, timing_.quiet_window / timing_.quiet_sample);
  const auto locked = [gil_locked] {
    return std::atomic_ref<int>(*const_cast<int*>(gil_locked)).load(std::memory_order_relaxed) != 0;
  };
  std::unique_lock lock(mu_);
  const uint64_t ticket = next_ticket_++;
  cv_.wait(lock, [&] { return head_ == ticket; });
  const auto head_since = Clock::now();
  int64_t quiet = 0;
  for (;;) {
    const auto now = Clock::now();
    const bool due =
        hurry_ > 0 || quiet >= quiet_samples || now - std::max(head_since, last_end_) >= timing_.max_deferral;
    if (due && LaneFree(now)) break;
    // Woken early by Leave() or Hurry(); a sample taken early only makes the quiet window shorter by that
    // much.
    cv_.wait_for(lock, timing_.quiet_sample);
    quiet = locked() ? 0 : quiet + 1;
  }
  const auto token = Clock::now();
  active_.push_back(token);
  ++head_;
  cv_.notify_all();
  return token;
}

bool FinalizeGate::Leave(Clock::time_point token) {
  std::lock_guard lock(mu_);
  if (auto it = std::find(active_.begin(), active_.end(), token); it != active_.end()) active_.erase(it);
  last_end_ = Clock::now();
  cv_.notify_all();
  return active_.empty() && head_ == next_ticket_;
}

bool FinalizeGate::Hurrying() {
  std::lock_guard lock(mu_);
  return hurry_ > 0;
}

void FinalizeGate::Hurry(int delta) {
  std::lock_guard lock(mu_);
  hurry_ += delta;
  cv_.notify_all();
}

}  // namespace subactor
