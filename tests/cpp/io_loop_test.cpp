// GoogleTest for the driver's io thread: timers, interrupt_after and the watchdog.
#include "io_loop.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>

#include "driver_fixture.hpp"
#include "dump_server.hpp"
#include "interpreter.hpp"
#include "stacks.hpp"

namespace subactor::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  return text.str();
}

TEST_F(DriverTest, TimerFiresOnceAndCannotBeCancelledAfterwards) {
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  auto timer = IoLoop::Get().After(0.01, [&] {
    std::lock_guard lock(mu);
    ++calls;
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return calls == 1; }));
  EXPECT_TRUE(timer->fired());
  EXPECT_FALSE(timer->Cancel());
}

TEST_F(DriverTest, CancelledTimerNeverFires) {
  std::atomic<int> calls = 0;
  auto timer = IoLoop::Get().After(0.05, [&] { ++calls; });
  EXPECT_TRUE(timer->Cancel());
  EXPECT_FALSE(timer->Cancel());
  // A later timer on the same (serial) io thread fires after the cancelled one would have.
  std::atomic<bool> later = false;
  auto probe = IoLoop::Get().After(0.1, [&] { later = true; });
  const auto t0 = std::chrono::steady_clock::now();
  while (!later && Since(t0) < 5) std::this_thread::yield();
  EXPECT_TRUE(later);
  EXPECT_EQ(calls, 0);
  EXPECT_FALSE(timer->fired());
}

TEST_F(DriverTest, InterruptAfterStopsBusyInterpreter) {
  Pipe started;
  auto interp = Interpreter::Spawn(
      "import os\nos.write(" + std::to_string(started.w()) + ", b'x')\nwhile True:\n    pass\n", "busy", 0);
  ASSERT_TRUE(started.Receive());
  auto timer = InterruptAfter(interp, 0.05, PyExc_KeyboardInterrupt);
  ASSERT_TRUE(interp->Join(5));
  EXPECT_TRUE(timer->fired());
  EXPECT_EQ(interp->outcome()->exc_type, "KeyboardInterrupt");
}

TEST_F(DriverTest, WatchdogDumpsUnlessDisarmed) {
  const std::string path = ::testing::TempDir() + "/watchdog-" + std::to_string(getpid()) + ".txt";
  std::remove(path.c_str());
  const int64_t disarmed = ArmWatchdog(60, path);
  EXPECT_TRUE(DisarmWatchdog(disarmed));
  EXPECT_FALSE(DisarmWatchdog(disarmed));
  const int64_t fires = ArmWatchdog(0.01, path);
  // The dump completes before the watchdog is forgotten... poll the file for the dump's final section.
  std::string dump;
  const auto t0 = std::chrono::steady_clock::now();
  while (dump.find("interpreter 0 (main)") == std::string::npos && Since(t0) < 5) {
    std::stringstream text;
    text << std::ifstream(path).rdbuf();
    dump = text.str();
    std::this_thread::yield();
  }
  EXPECT_NE(dump.find("watchdog stack dump"), std::string::npos) << dump;
  EXPECT_NE(dump.find("interpreter 0 (main)"), std::string::npos) << dump;
  EXPECT_FALSE(DisarmWatchdog(fires));
  std::remove(path.c_str());
}

TEST_F(DriverTest, LateDisarmWaitsForTheDumpToBeComplete) {
  const std::string path = ::testing::TempDir() + "/watchdog-late-" + std::to_string(getpid()) + ".txt";
  std::remove(path.c_str());
  int64_t id = 0;
  {
    Gil gil;  // the dump writes its GIL-free part, then waits for us
    id = ArmWatchdog(0.01, path);
    const auto t0 = std::chrono::steady_clock::now();
    while (ReadFile(path).find("driver:") == std::string::npos && Since(t0) < 5) std::this_thread::yield();
    ASSERT_NE(ReadFile(path).find("driver:"), std::string::npos);
    EXPECT_EQ(ReadFile(path).find(kDumpEnd), std::string::npos) << "complete without the GIL";
  }
  EXPECT_FALSE(DisarmWatchdog(id, 10));
  const std::string dump = ReadFile(path);
  EXPECT_NE(dump.find("interpreter 0 (main)"), std::string::npos) << dump;
  EXPECT_NE(dump.find(kDumpEnd), std::string::npos) << dump;
  std::remove(path.c_str());
}

// Connects to a UNIX socket and reads until EOF (bounded).
std::string ReadSocket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, path.size());
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    char buf[4096];
    for (pollfd p{fd, POLLIN, 0}; poll(&p, 1, 10000) == 1;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, n);
    }
  }
  ::close(fd);
  return out;
}

TEST_F(DriverTest, DumpServerAnswersEachConnectionWithADump) {
  const std::string path = ::testing::TempDir() + "/dumps-" + std::to_string(getpid()) + ".sock";
  std::remove(path.c_str());
  ServeDumps(path);
  EXPECT_THROW(ServeDumps(path + "2"), std::runtime_error);
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  for (int i = 0; i < 2; ++i) {
    const std::string dump = ReadSocket(path);
    EXPECT_NE(dump.find("stack dump on request"), std::string::npos) << dump;
    EXPECT_NE(dump.find("interpreter 0 (main)"), std::string::npos) << dump;
    EXPECT_NE(dump.find(kDumpEnd), std::string::npos) << dump;
  }
  EXPECT_TRUE(StopServingDumps());
  EXPECT_FALSE(StopServingDumps());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace subactor::testing
