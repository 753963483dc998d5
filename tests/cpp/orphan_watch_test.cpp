// GoogleTest for exit-when-another-process-ends (orphan_watch.hpp): it exits after the grace, and not when
// disarmed in time.
#include "orphan_watch.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace subactor::testing {
namespace {

// A child process that sleeps until killed, and a pidfd for it.
struct Sleeper {
  Sleeper() {
    pid = fork();
    if (pid == 0) {
      pause();
      _exit(0);
    }
    pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  }
  ~Sleeper() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(pidfd);
  }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;
  pid_t pid = -1;
  int pidfd = -1;
};

TEST(OrphanWatchDeathTest, ExitsWithTheStatusOnceTheWatchedProcessEndedAndTheGracePassed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        Sleeper sleeper;
        ArmExitWhenProcessEnds(sleeper.pidfd, 0.05, "watched process ended\n", 42);
        kill(sleeper.pid, SIGKILL);
        waitpid(sleeper.pid, nullptr, 0);
        std::this_thread::sleep_for(std::chrono::seconds(30));  // the watch exits well before
      },
      ::testing::ExitedWithCode(42), "watched process ended");
}

TEST(OrphanWatchDeathTest, DisarmedDuringTheGraceItNeverFires) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        Sleeper sleeper;
        const int64_t id = ArmExitWhenProcessEnds(sleeper.pidfd, 0.5, "must not fire\n", 42);
        kill(sleeper.pid, SIGKILL);
        waitpid(sleeper.pid, nullptr, 0);
        if (!DisarmExitWhenProcessEnds(id)) _exit(3);
        if (DisarmExitWhenProcessEnds(id)) _exit(4);  // once only
        std::this_thread::sleep_for(std::chrono::seconds(1));
        _exit(7);
      },
      ::testing::ExitedWithCode(7), "");
}

}  // namespace
}  // namespace subactor::testing
