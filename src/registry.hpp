// The process-wide registry of live interpreter handles (shared by every interpreter that imports _native).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "interpreter.hpp"

namespace subactor {

// Holds a handle from Spawn until its worker is finished: "live" means the worker thread has not finished
// (starting, running, ending, or abandoned). The extension module is loaded once per process, so handles
// spawned from inside subinterpreters land here too.
//
// Typical usage:
//   for (const Snapshot& s : Registry::Get().LiveSnapshots()) ...
class Registry {
 public:
  static Registry& Get();

  void Add(std::shared_ptr<Interpreter> handle);
  void Remove(const Interpreter* handle);
  std::vector<std::shared_ptr<Interpreter>> Live() const;
  std::vector<Snapshot> LiveSnapshots() const;
  size_t LiveCount() const;

  // The live handles whose parent is parent_id (all of them when parent_id is nullopt).
  std::vector<std::shared_ptr<Interpreter>> LiveChildren(std::optional<int64_t> parent_id) const;

  // Free-text labels by interpreter id ("actor 'worker'"), shown by dumps next to the handle's own name
  // (which is fixed at spawn: a warm-pool interpreter is named before it knows which actor it will run).
  // An empty label erases; a worker erases its interpreter's label when the interpreter ends (ids are
  // never reused within a process).
  void SetLabel(int64_t interp_id, std::string label);
  std::map<int64_t, std::string> Labels() const;

  // Whoever must hear that an interpreter will run no more Python code (its code is done and its threads are
  // gone, or its worker was abandoned in a C call) sets a listener; workers call Retired(). The listener runs
  // on the calling thread, GIL held or not, outside every lock here: it must only take leaf locks. An
  // abandoned worker that gets out of its C call after all retires its interpreter a second time.
  using RetiredListener = std::function<void(int64_t interp_id)>;
  void SetRetiredListener(RetiredListener listener);
  void Retired(int64_t interp_id) const;

 private:
  Registry() = default;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Interpreter>> live_;  // GUARDED_BY(mu_)
  std::map<int64_t, std::string> labels_;           // GUARDED_BY(mu_)
  RetiredListener retired_listener_;                // GUARDED_BY(mu_)
};

// How long Shutdown gives interpreters that are done to finish ending, unless told otherwise. Generous:
// finalization takes tens of ms per interpreter, and N of them take turns on the shared GIL.
inline constexpr double kDefaultFinalizeTimeout = 30.0;

// shutdown(): interrupts every live handle (of parent_id, or all) and waits, within one shared deadline of
// `timeout` seconds, for each to be done; abandons the ones that are not. Then, unless finalize_timeout is
// nullopt, waits within a second shared deadline of `finalize_timeout` seconds for the done ones to finish
// ending (Py_EndInterpreter: each one's own finalization, serialized on the GIL, so it gets its own bound
// rather than a share of `timeout`). Returns the snapshots of the abandoned ones (state "abandoned") and of
// those still ending after the second deadline (state "ending": reported, not abandoned; they are no
// actor's any more). nullopt leaves ending interpreters alone: they finish on their own threads. Call WITH
// the GIL; it is released while waiting.
std::vector<Snapshot> Shutdown(double timeout, std::optional<int64_t> parent_id,
                               std::optional<double> finalize_timeout = kDefaultFinalizeTimeout);

}  // namespace subactor
