// The shelf: idle pooled interpreters the root's warm pool lends, which any interpreter of the process may
// take.
#include "shelf.hpp"

#include <pybind11/stl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "registry.hpp"

namespace py = pybind11;

namespace subactor {

Shelf& Shelf::Get() {
  static auto* shelf = new Shelf();  // never destroyed: taken from any interpreter until the process ends
  return *shelf;
}

void Shelf::Put(ShelfItem item) {
  std::lock_guard lock(mu_);
  items_.push_back(std::move(item));
}

std::optional<ShelfItem> Shelf::Take(int64_t taker) {
  std::optional<ShelfItem> item;
  {
    std::lock_guard lock(mu_);
    if (items_.empty()) return std::nullopt;
    item = std::move(items_.front());
    items_.pop_front();
    ++in_flight_[taker];
  }
  item->interp->Adopt(taker);
  Signal();
  return item;
}

std::vector<ShelfItem> Shelf::TakeAll(int64_t lender) {
  std::vector<ShelfItem> out;
  {
    std::lock_guard lock(mu_);
    std::deque<ShelfItem> others;
    for (auto& item : items_) {
      if (item.lender == lender) {
        out.push_back(std::move(item));
      } else {
        others.push_back(std::move(item));
      }
    }
    items_ = std::move(others);
  }
  for (auto& item : out) item.interp->Adopt(lender);
  return out;
}

void Shelf::Done(int64_t taker) {
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(taker);
    if (it != in_flight_.end() && --it->second == 0) in_flight_.erase(it);
  }
  Signal();
}

void Shelf::ForgetTaker(int64_t taker) {
  {
    std::lock_guard lock(mu_);
    if (in_flight_.erase(taker) == 0) return;
  }
  Signal();
}

std::size_t Shelf::Count(std::optional<int64_t> lender) const { return Items(lender).size(); }

std::size_t Shelf::InFlight() const {
  std::lock_guard lock(mu_);
  std::size_t total = 0;
  for (const auto& [taker, count] : in_flight_) total += count;
  return total;
}

std::vector<ShelfItem> Shelf::Items(std::optional<int64_t> lender) const {
  std::lock_guard lock(mu_);
  std::vector<ShelfItem> out;
  for (const auto& item : items_) {
    if (!lender || item.lender == *lender) out.push_back(item);
  }
  return out;
}

int Shelf::TakenFd() {
  std::lock_guard lock(mu_);
  if (taken_fd_ < 0) taken_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return taken_fd_;
}

void Shelf::Signal() {
  const int fd = TakenFd();
  const uint64_t one = 1;
  if (fd >= 0) [[maybe_unused]]
    const ssize_t n = ::write(fd, &one, sizeof one);
}

namespace {

int64_t Caller() { return PyInterpreterState_GetID(PyInterpreterState_Get()); }

py::tuple AsTuple(const ShelfItem& item) {
  return py::make_tuple(item.interp, item.control_fd, item.held_fds);
}

}  // namespace

void BindShelf(py::module_& m) {
  // The module is loaded once per process (every interpreter shares it), so this is set once.
  Registry::Get().SetRetiredListener([](int64_t interp_id) { Shelf::Get().ForgetTaker(interp_id); });
  m.def(
      "shelf_put",
      [](const std::shared_ptr<Interpreter>& interp, int control_fd, std::vector<int> held_fds) {
        if (!interp) throw py::type_error("interp must be an Interpreter handle");
        if (control_fd < 0) throw py::value_error("control_fd must be an open descriptor (>= 0)");
        if (interp->closed()) throw std::runtime_error("cannot lend " + interp->Label() + ": it is closed");
        Shelf::Get().Put(ShelfItem{interp, control_fd, Caller(), std::move(held_fds)});
      },
      py::arg("interp"), py::arg("control_fd"), py::arg("held_fds"),
      "Lend an idle pooled interpreter: the shelf owns control_fd until someone takes it");
  m.def(
      "shelf_take",
      []() -> py::object {
        auto item = Shelf::Get().Take(Caller());
        if (!item) return py::none();
        return AsTuple(*item);
      },
      "(handle, control fd, held fds) of the oldest lent interpreter, now the caller's (its fd too; it "
      "counts in flight until shelf_done()), or None");
  m.def(
      "shelf_take_all",
      [] {
        py::list out;
        for (const auto& item : Shelf::Get().TakeAll(Caller())) out.append(AsTuple(item));
        return out;
      },
      "Take every interpreter the caller lent (to release them): a list of (handle, control fd, held fds)");
  m.def(
      "shelf_done", [] { Shelf::Get().Done(Caller()); },
      "A spawn the caller took from the shelf for is complete (or failed)");
  m.def(
      "shelf_count", [](std::optional<int64_t> lender) { return Shelf::Get().Count(lender); },
      py::arg("lender") = py::none(),
      "How many interpreters are lent and untaken (all, or those `lender` lent)");
  m.def(
      "shelf_in_flight", [] { return Shelf::Get().InFlight(); },
      "Takes whose spawn has not yet said shelf_done() (an interpreter's are forgotten when it ends or is "
      "abandoned)");
  m.def(
      "shelf_items",
      [](std::optional<int64_t> lender) {
        py::list out;
        for (const auto& item : Shelf::Get().Items(lender)) out.append(AsTuple(item));
        return out;
      },
      py::arg("lender") = py::none(),
      "What is on the shelf (all, or what `lender` lent), left there: a list of (handle, control fd, held "
      "fds)");
  m.def(
      "shelf_taken_fd", [] { return Shelf::Get().TakenFd(); },
      "An eventfd that becomes readable at every take and done (the lender drains it); never closed");
}

}  // namespace subactor
