// The shelf: idle pooled interpreters the root's warm pool lends, which any interpreter of the process may
// take.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "interpreter.hpp"

namespace subactor {

// Design: a warm pool lives in one interpreter (Python objects cannot cross), but a pooled interpreter is a
// native handle plus file descriptors, which belong to the whole process. The pool puts each ready one here;
// a spawning interpreter (the root, or a nested parent in a subinterpreter) takes one, which adopts it (its
// exit sweep covers it) and hands over the control fd. A take counts as "in flight" until the taker says its
// spawn is complete (Done): the lender refills only then, so a refill's import does not compete for the GIL
// with the handshake the pool exists to speed up. Takes in flight are counted per taker: a taker that ends
// or is abandoned before saying Done (hard-killed mid-spawn, stuck in C) has its takes forgotten by the
// driver (ForgetTaker), so the lender's refill never waits on a spawn that can no longer complete. Done,
// Take and a forgetting all make taken_fd readable (the lender's wake-up: nothing polls). Policy (when to
// lend, refill, release) is the Python pool's.
struct ShelfItem {
  std::shared_ptr<Interpreter> interp;
  int control_fd = -1;  // our end of its control socket: owned by the shelf, then by the taker
  int64_t lender = -1;  // the interpreter whose pool lent it (its pool counts and releases only its own)
  std::vector<int> held_fds;  // descriptors it holds in this process, for leak accounting (not owned)
};

class Shelf {
 public:
  static Shelf& Get();

  void Put(ShelfItem item);
  // The oldest item, adopted by `taker`, or nullopt when empty. Counts one spawn in flight.
  std::optional<ShelfItem> Take(int64_t taker);
  // Every item `lender` lent (to release them), adopted by it; nothing counts in flight.
  std::vector<ShelfItem> TakeAll(int64_t lender);
  // A spawn `taker` took an item for is complete (or failed).
  void Done(int64_t taker);
  // `taker` ended or was abandoned: its takes are no longer in flight.
  void ForgetTaker(int64_t taker);
  // Items on the shelf, all or those `lender` lent.
  std::size_t Count(std::optional<int64_t> lender) const;
  std::size_t InFlight() const;
  // Copies of what is on the shelf (for status and leak accounting; they stay on it).
  std::vector<ShelfItem> Items(std::optional<int64_t> lender) const;
  // An eventfd made readable by every Take and Done; never closed. The reader drains it.
  int TakenFd();

 private:
  Shelf() = default;
  void Signal();

  mutable std::mutex mu_;                     // leaf lock; never held while taking the GIL
  std::deque<ShelfItem> items_;               // GUARDED_BY(mu_)
  std::map<int64_t, std::size_t> in_flight_;  // GUARDED_BY(mu_): takes not yet done, by taker
  int taken_fd_ = -1;                         // GUARDED_BY(mu_)
};

// Adds shelf_put, shelf_take, shelf_take_all, shelf_done, shelf_count, shelf_in_flight, shelf_items and
// shelf_taken_fd to the module.
void BindShelf(pybind11::module_& m);

}  // namespace subactor
