// Exit-when-another-process-ends: one detached thread per watch, blocked in poll(2) on a pidfd and an
// eventfd.
#include "orphan_watch.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

namespace subactor {
namespace {

// Design: the watch thread owns both fds and closes them when it ends; Disarm writes the eventfd under the
// same lock the thread takes to close it, so it never writes a closed (or reused) descriptor.
struct Watch {
  std::mutex mu;
  int pidfd = -1;         // owned by the thread
  int cancel_fd = -1;     // GUARDED_BY(mu); -1 once the thread closed it
  bool disarmed = false;  // GUARDED_BY(mu)
};

std::mutex watches_mu;
// Leaked on purpose, like the io loop: a watch thread may outlive static destruction at process exit.
auto* watches = new std::map<int64_t, std::shared_ptr<Watch>>();  // GUARDED_BY(watches_mu)
int64_t next_id = 1;                                              // GUARDED_BY(watches_mu)

// poll() that resumes after signals; timeout_ms < 0 waits forever. Returns false on a real error.
bool PollRetrying(pollfd* fds, nfds_t count, int64_t timeout_ms) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<int64_t>(0, timeout_ms));
  for (;;) {
    int wait = -1;
    if (timeout_ms >= 0) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      wait = static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT32_MAX));
    }
    if (::poll(fds, count, wait) >= 0) return true;
    if (errno != EINTR) return false;
  }
}

void WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

void RunWatch(const std::shared_ptr<Watch>& watch, double grace, const std::string& message, int status) {
  int cancel_fd = -1;
  {
    std::lock_guard lock(watch->mu);
    cancel_fd = watch->cancel_fd;
  }
  pollfd fds[2] = {{watch->pidfd, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
  bool fire = PollRetrying(fds, 2, -1) && fds[1].revents == 0 && fds[0].revents != 0;
  if (fire) {  // the process ended: the grace period, still disarmable
    const auto grace_ms = static_cast<int64_t>(std::clamp(grace, 0.0, 1e7) * 1000.0);
    fds[1].revents = 0;
    fire = PollRetrying(&fds[1], 1, grace_ms) && fds[1].revents == 0;
  }
  if (fire) {
    std::lock_guard lock(watch->mu);
    if (!watch->disarmed) {
      WriteAll(STDERR_FILENO, message);
      ::_exit(status);
    }
  }
  std::lock_guard lock(watch->mu);
  ::close(watch->pidfd);
  ::close(watch->cancel_fd);
  watch->cancel_fd = -1;
}

}  // namespace

int64_t ArmExitWhenProcessEnds(int pidfd, double grace, std::string message, int status) {
  auto watch = std::make_shared<Watch>();
  watch->pidfd = ::fcntl(pidfd, F_DUPFD_CLOEXEC, 0);
  if (watch->pidfd < 0) throw std::system_error(errno, std::generic_category(), "dup of the pidfd");
  watch->cancel_fd = ::eventfd(0, EFD_CLOEXEC);
  if (watch->cancel_fd < 0) {
    const int error = errno;
    ::close(watch->pidfd);
    throw std::system_error(error, std::generic_category(), "eventfd");
  }
  int64_t id = 0;
  {
    std::lock_guard lock(watches_mu);
    id = next_id++;
    (*watches)[id] = watch;
  }
  try {
    std::thread([watch, grace, message = std::move(message), status] {
      RunWatch(watch, grace, message, status);
    }).detach();
  } catch (...) {
    std::lock_guard lock(watches_mu);
    watches->erase(id);
    ::close(watch->pidfd);
    ::close(watch->cancel_fd);
    throw;
  }
  return id;
}

bool DisarmExitWhenProcessEnds(int64_t id) {
  std::shared_ptr<Watch> watch;
  {
    std::lock_guard lock(watches_mu);
    auto it = watches->find(id);
    if (it == watches->end()) return false;
    watch = std::move(it->second);
    watches->erase(it);
  }
  std::lock_guard lock(watch->mu);
  if (watch->disarmed || watch->cancel_fd < 0) return false;
  watch->disarmed = true;
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(watch->cancel_fd, &one, sizeof one);
  return true;
}

}  // namespace subactor
