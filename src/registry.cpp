// The process-wide registry of live interpreter handles, and the interrupt-join-abandon shutdown sweep.
#include "registry.hpp"

#include <algorithm>
#include <chrono>

namespace subactor {

Registry& Registry::Get() {
  // Leaked on purpose: worker threads may outlive static destruction (abandoned ones never finish).
  static Registry* registry = new Registry();
  return *registry;
}

void Registry::Add(std::shared_ptr<Interpreter> handle) {
  std::lock_guard lock(mu_);
  live_.push_back(std::move(handle));
}

void Registry::Remove(const Interpreter* handle) {
  std::lock_guard lock(mu_);
  std::erase_if(live_, [handle](const auto& h) { return h.get() == handle; });
}

std::vector<std::shared_ptr<Interpreter>> Registry::Live() const {
  std::lock_guard lock(mu_);
  return live_;
}

std::vector<Snapshot> Registry::LiveSnapshots() const {
  // Snapshots take each handle's own lock: never while holding mu_ (the worker takes them the other way).
  std::vector<Snapshot> out;
  for (const auto& handle : Live()) out.push_back(handle->Snap());
  return out;
}

size_t Registry::LiveCount() const {
  std::lock_guard lock(mu_);
  return live_.size();
}

void Registry::SetLabel(int64_t interp_id, std::string label) {
  std::lock_guard lock(mu_);
  if (label.empty()) {
    labels_.erase(interp_id);
  } else {
    labels_[interp_id] = std::move(label);
  }
}

std::map<int64_t, std::string> Registry::Labels() const {
  std::lock_guard lock(mu_);
  return labels_;
}

std::vector<std::shared_ptr<Interpreter>> Registry::LiveChildren(std::optional<int64_t> parent_id) const {
  std::vector<std::shared_ptr<Interpreter>> out;
  for (auto& handle : Live()) {
    if (!parent_id || handle->Snap().parent_id == *parent_id) out.push_back(std::move(handle));
  }
  return out;
}

void Registry::SetRetiredListener(RetiredListener listener) {
  std::lock_guard lock(mu_);
  retired_listener_ = std::move(listener);
}

void Registry::Retired(int64_t interp_id) const {
  RetiredListener listener;
  {
    std::lock_guard lock(mu_);
    listener = retired_listener_;
  }
  if (listener) listener(interp_id);
}

std::vector<Snapshot> Shutdown(double timeout, std::optional<int64_t> parent_id,
                               std::optional<double> finalize_timeout) {
  using Clock = std::chrono::steady_clock;
  const auto left = [](auto deadline) {
    return std::max(0.0, std::chrono::duration<double>(deadline - Clock::now()).count());
  };
  auto handles = Registry::Get().LiveChildren(parent_id);
  for (const auto& handle : handles) handle->Interrupt(PyExc_KeyboardInterrupt, /*all_threads=*/true);
  std::vector<Snapshot> stuck;
  Py_BEGIN_ALLOW_THREADS;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout);
  std::vector<std::shared_ptr<Interpreter>> ending;
  for (const auto& handle : handles) {
    if (handle->WaitDone(left(deadline))) {
      ending.push_back(handle);
    } else {
      handle->Abandon();
      stuck.push_back(handle->Snap());
    }
  }
  if (finalize_timeout) {
    const auto finalize_deadline = Clock::now() + std::chrono::duration<double>(*finalize_timeout);
    for (const auto& handle : ending) {
      if (!handle->Join(left(finalize_deadline))) stuck.push_back(handle->Snap());
    }
  }
  Py_END_ALLOW_THREADS;
  return stuck;
}

}  // namespace subactor
