// The process-wide registry of live interpreter handles (shared by every interpreter that imports _native).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "interpreter.hpp"

namespace subactor {

// Holds a handle from Spawn until its worker is done: "live" means the worker thread has not finished
// (starting, running, or abandoned). The extension module is loaded once per process, so handles spawned
// from inside subinterpreters land here too.
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

 private:
  Registry() = default;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Interpreter>> live_;  // GUARDED_BY(mu_)
  std::map<int64_t, std::string> labels_;           // GUARDED_BY(mu_)
};

// shutdown(): interrupts every live handle (of parent_id, or all), joins each within one shared deadline,
// abandons the ones still running and returns their snapshots. Call WITH the GIL; it is released while
// joining.
std::vector<Snapshot> Shutdown(double timeout, std::optional<int64_t> parent_id);

}  // namespace subactor
