// GoogleTest for the interpreter handle: lifecycle, outcomes, concurrency, interrupt, abandon, done and
// exit fds, ending, shutdown, dumps.
#include "interpreter.hpp"

#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "driver_fixture.hpp"
#include "stacks.hpp"

namespace subactor::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string Fmt(const std::string& code, int fd) {
  std::string out = code;
  for (size_t at; (at = out.find("{fd}")) != std::string::npos;) out.replace(at, 4, std::to_string(fd));
  return out;
}

// Code that says it started on `started`, then blocks in C (os.read) until `release` gets a byte.
std::string StartThenBlockInC(const Pipe& started, const Pipe& release) {
  return Fmt("import os\nos.write({fd}, b'x')\n", started.w()) + Fmt("os.read({fd}, 1)\n", release.r());
}

bool Readable(int fd, int timeout_ms = 0) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1;
}

// The eventfds open in this process (the handles' done and exit fds, the io loop's own).
int EventFdCount() {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    if (std::filesystem::read_symlink(entry.path(), error).string() == "anon_inode:[eventfd]") ++n;
  }
  return n;
}

// An interpreter whose finalization (Py_EndInterpreter clearing __main__) blocks until a byte arrives on
// {fd}: it stays "ending" for as long as the test wants. Prefix it to a bootstrap.
constexpr char kBlockFinalization[] =
    "import os\n"
    "class BlockFinalization:\n"
    "    def __del__(self, _read=os.read):\n"
    "        _read({fd}, 1)\n"
    "blocker = BlockFinalization()\n";

TEST_F(DriverTest, CreatesRunsAndEnds) {
  auto interp = Interpreter::Spawn("x = sum(range(10))\nassert x == 45\n", "basic", 0);
  ASSERT_TRUE(interp->Join(10));
  const auto outcome = interp->outcome();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok);
  EXPECT_EQ(outcome->exit_code, 0);
  EXPECT_FALSE(outcome->exc_type.has_value());
  EXPECT_EQ(interp->state(), State::kFinished);
  const Snapshot snap = interp->Snap();
  ASSERT_TRUE(snap.id.has_value());
  EXPECT_GT(*snap.id, 0);
  EXPECT_TRUE(snap.thread_id.has_value());
  EXPECT_EQ(snap.name, "basic");
  EXPECT_TRUE(interp->Join(0)) << "join is idempotent once it returned true";
  EXPECT_TRUE(interp->Close());
}

TEST_F(DriverTest, RunsThirtyTwoInterpretersAtOnce) {
  constexpr int kCount = 32;
  Pipe started;
  Pipe go;
  std::vector<std::shared_ptr<Interpreter>> interps;
  interps.reserve(kCount);
  const std::string code =
      Fmt("import os\nos.write({fd}, b'x')\n", started.w()) + Fmt("os.read({fd}, 1)\n", go.r());
  for (int i = 0; i < kCount; ++i) interps.push_back(Interpreter::Spawn(code, "n" + std::to_string(i), 0));
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(started.Receive()) << "only " << i << " started";
  // All 32 are inside their bootstrap at this point, each on its own thread.
  EXPECT_EQ(Registry::Get().LiveCount(), static_cast<size_t>(kCount));
  std::set<uint64_t> threads;
  std::set<int64_t> ids;
  for (const auto& interp : interps) {
    const Snapshot snap = interp->Snap();
    EXPECT_EQ(snap.state, State::kRunning);
    threads.insert(snap.thread_id.value_or(0));
    ids.insert(snap.id.value_or(-1));
  }
  EXPECT_EQ(threads.size(), static_cast<size_t>(kCount));
  EXPECT_EQ(ids.size(), static_cast<size_t>(kCount));
  go.Send(kCount);
  for (const auto& interp : interps) {
    ASSERT_TRUE(interp->Join(20));
    EXPECT_TRUE(interp->outcome()->ok);
  }
}

TEST_F(DriverTest, ReportsExceptionWithTraceback) {
  auto interp = Interpreter::Spawn("def inner():\n    raise ValueError('boom 42')\ninner()\n", "fails", 0);
  ASSERT_TRUE(interp->Join(10));
  const auto outcome = interp->outcome();
  EXPECT_FALSE(outcome->ok);
  EXPECT_FALSE(outcome->exit_code.has_value());
  EXPECT_EQ(outcome->exc_type, "ValueError");
  EXPECT_EQ(outcome->exc_message, "boom 42");
  const std::string tb = outcome->traceback.value_or("");
  EXPECT_NE(tb.find("Traceback (most recent call last)"), std::string::npos) << tb;
  EXPECT_NE(tb.find("line 2, in inner"), std::string::npos) << tb;
  EXPECT_NE(tb.find("ValueError: boom 42"), std::string::npos) << tb;
}

TEST_F(DriverTest, QualifiesExceptionTypesLikeTracebacks) {
  // Module-qualified, except builtins and __main__ (as traceback.format_exception_only prints them).
  auto in_module = Interpreter::Spawn("import json\njson.loads('{')\n", "json", 0);
  auto in_main = Interpreter::Spawn("class Error(Exception): pass\nraise Error('x')\n", "main", 0);
  ASSERT_TRUE(in_module->Join(10));
  ASSERT_TRUE(in_main->Join(10));
  EXPECT_EQ(in_module->outcome()->exc_type, "json.decoder.JSONDecodeError");
  EXPECT_EQ(in_main->outcome()->exc_type, "Error");
}

TEST_F(DriverTest, TreatsSystemExitZeroAsOkAndRecordsOtherCodes) {
  auto zero = Interpreter::Spawn("import sys\nsys.exit()\n", "exit0", 0);
  auto three = Interpreter::Spawn("import sys\nsys.exit(3)\n", "exit3", 0);
  ASSERT_TRUE(zero->Join(10));
  ASSERT_TRUE(three->Join(10));
  EXPECT_TRUE(zero->outcome()->ok);
  EXPECT_EQ(zero->outcome()->exit_code, 0);
  EXPECT_FALSE(three->outcome()->ok);
  EXPECT_EQ(three->outcome()->exit_code, 3);
  EXPECT_EQ(three->outcome()->exc_type, "SystemExit");
}

TEST_F(DriverTest, InterruptEndsBusyLoopQuickly) {
  Pipe started;
  auto interp = Interpreter::Spawn(
      Fmt("import os\nos.write({fd}, b'x')\nwhile True:\n    pass\n", started.w()), "busy", 0);
  ASSERT_TRUE(started.Receive());
  const auto t0 = Clock::now();
  {
    Gil gil;
    EXPECT_TRUE(interp->Interrupt(PyExc_KeyboardInterrupt, true));
  }
  ASSERT_TRUE(interp->Join(5));
  EXPECT_LT(Since(t0), 1.0);
  EXPECT_EQ(interp->outcome()->exc_type, "KeyboardInterrupt");
  Gil gil;
  EXPECT_FALSE(interp->Interrupt(PyExc_KeyboardInterrupt, true))
      << "a finished interpreter is not interrupted";
}

TEST_F(DriverTest, InterruptReachesDaemonThreadsOfTheInterpreter) {
  // The bootstrap returns at once, but its (daemon) thread spins: the handle stays running until the
  // interrupt ends the thread too.
  Pipe started;
  auto interp = Interpreter::Spawn(Fmt("import os, threading\n"
                                       "def spin():\n"
                                       "    os.write({fd}, b'x')\n"
                                       "    while True: pass\n"
                                       "threading.Thread(target=spin).start()\n",
                                       started.w()),
                                   "daemon-spin", 0);
  ASSERT_TRUE(started.Receive());
  EXPECT_FALSE(interp->Join(0.05));
  {
    Gil gil;
    EXPECT_TRUE(interp->Interrupt(PyExc_SystemExit, true));
  }
  ASSERT_TRUE(interp->Join(5));
  EXPECT_TRUE(interp->outcome()->ok) << "the bootstrap itself returned normally";
}

// conc-anal/subint-destroy-race.md: an interrupt racing with the worker ending its interpreter must either
// land before the end or be refused, never touch a freed interpreter.
TEST_F(DriverTest, InterruptRacingWithEndIsSafe) {
  for (int round = 0; round < 40; ++round) {
    auto interp = Interpreter::Spawn(
        "x = [i * i for i in range(round(__import__('random').random() * 3000))]", "racer", 0);
    // Interrupt again and again until refused: from then on it is ending (its finalization comes later).
    // Paced: a loop that retakes the GIL from C at once starves the worker (C code never honours a drop
    // request), and each interrupt's temporary thread state makes the worker wait for it (see Interrupt()).
    for (bool refused = false; !(refused && interp->WaitDone(0));) {
      {
        Gil gil;
        refused = !interp->Interrupt(PyExc_SystemExit, true);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    ASSERT_TRUE(interp->Join(10));
    Gil gil;
    EXPECT_FALSE(interp->Interrupt(PyExc_SystemExit, true));
    EXPECT_TRUE(interp->outcome()->ok) << "SystemExit (from the interrupt) or a normal return";
  }
}

TEST_F(DriverTest, InterruptWhileStartingRaisesAtStart) {
  auto interp = Interpreter::Spawn("while True:\n    pass\n", "early", 0);
  {
    Gil gil;
    EXPECT_TRUE(interp->Interrupt(PyExc_KeyboardInterrupt, true));
  }
  ASSERT_TRUE(interp->Join(5));
  EXPECT_EQ(interp->outcome()->exc_type, "KeyboardInterrupt");
}

TEST_F(DriverTest, WaitsForThreadsStartedInTheInterpreter) {
  Pipe done;
  auto interp = Interpreter::Spawn(Fmt("import os, threading, time\n"
                                       "def later():\n"
                                       "    time.sleep(0.1)\n"
                                       "    os.write({fd}, b'x')\n"
                                       "threading.Thread(target=later).start()\n",
                                       done.w()),
                                   "threads", 0);
  ASSERT_TRUE(interp->Join(10));
  EXPECT_TRUE(done.Receive(0)) << "the interpreter ended before its thread did";
}

TEST_F(DriverTest, JoinTimesOutOnThreadBlockedInCThenAbandons) {
  Pipe started;
  Pipe release;
  auto interp = Interpreter::Spawn(StartThenBlockInC(started, release), "stuck", 0);
  ASSERT_TRUE(started.Receive());
  const auto t0 = Clock::now();
  EXPECT_FALSE(interp->Join(0.2));
  EXPECT_GE(Since(t0), 0.2);
  EXPECT_LT(Since(t0), 1.0);
  {
    Gil gil;  // the exception waits for the C call (os.read) to return
    EXPECT_TRUE(interp->Interrupt(PyExc_KeyboardInterrupt, true));
  }
  EXPECT_FALSE(interp->Join(0.05));
  EXPECT_TRUE(interp->Abandon());
  EXPECT_EQ(interp->state(), State::kAbandoned);
  auto live = Registry::Get().LiveSnapshots();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].state, State::kAbandoned);
  EXPECT_EQ(live[0].name, "stuck");
  // Unblock it so this test leaves nothing behind: it then ends its own interpreter on its own thread.
  release.Send();
  ASSERT_TRUE(interp->Join(10));
  EXPECT_EQ(interp->outcome()->exc_type, "KeyboardInterrupt");
  EXPECT_FALSE(interp->Abandon()) << "finished: nothing left to abandon";
}

TEST_F(DriverTest, TellsTheRetiredListenerWhenAnInterpreterEndsOrIsAbandoned) {
  std::mutex mu;
  std::vector<int64_t> retired;
  Registry::Get().SetRetiredListener([&](int64_t id) {
    std::lock_guard lock(mu);
    retired.push_back(id);
  });
  const auto heard = [&] {
    std::lock_guard lock(mu);
    return retired;
  };
  auto ends = Interpreter::Spawn("pass\n", "ends", 0);
  ASSERT_TRUE(ends->Join(10));
  EXPECT_EQ(heard(), std::vector<int64_t>{*ends->Snap().id});
  Pipe started;
  Pipe release;
  auto stuck = Interpreter::Spawn(StartThenBlockInC(started, release), "stuck", 0);
  ASSERT_TRUE(started.Receive());
  EXPECT_EQ(heard().size(), 1u) << "running: not retired";
  EXPECT_TRUE(stuck->Abandon());
  EXPECT_EQ(heard(), (std::vector<int64_t>{*ends->Snap().id, *stuck->Snap().id}));
  release.Send();
  ASSERT_TRUE(stuck->Join(10));
  EXPECT_EQ(heard().back(), *stuck->Snap().id)
      << "an abandoned one that got out retires again (listeners are idempotent)";
  Registry::Get().SetRetiredListener(nullptr);
}

TEST_F(DriverTest, ExitFdBecomesReadableExactlyOnce) {
  Pipe release;
  auto interp = Interpreter::Spawn(Fmt("import os\nos.read({fd}, 1)\n", release.r()), "fd", 0);
  pollfd p{interp->exit_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0) << "readable before the thread finished";
  release.Send();
  ASSERT_EQ(poll(&p, 1, 10000), 1);
  EXPECT_EQ(poll(&p, 1, 0), 1) << "level-triggered: still readable";
  EXPECT_TRUE(interp->Join(0)) << "readable implies finished";
  uint64_t count = 0;
  ASSERT_EQ(::read(interp->exit_fd(), &count, sizeof count), static_cast<ssize_t>(sizeof count));
  EXPECT_EQ(count, 1u) << "written exactly once";
  EXPECT_TRUE(interp->Close());
  EXPECT_EQ(interp->exit_fd(), -1);
}

// conc-anal/subint-finalization-off-the-teardown-path.md: done (the actor is over) comes before finished.
TEST_F(DriverTest, DoneFdBecomesReadableBeforeExitFd) {
  Pipe finalize;
  auto interp = Interpreter::Spawn(Fmt(kBlockFinalization, finalize.r()), "ending", 0);
  ASSERT_TRUE(Readable(interp->done_fd(), 10000));
  EXPECT_TRUE(interp->WaitDone(0));
  EXPECT_FALSE(Readable(interp->exit_fd())) << "finalization is blocked: not finished";
  EXPECT_EQ(interp->state(), State::kEnding);
  EXPECT_FALSE(interp->Join(0.05));
  auto live = Registry::Get().LiveSnapshots();
  ASSERT_EQ(live.size(), 1u) << "an ending interpreter is still live";
  EXPECT_EQ(live[0].state, State::kEnding);
  EXPECT_STREQ(StateName(live[0].state), "ending");
  {
    Gil gil;
    EXPECT_FALSE(interp->Interrupt(PyExc_KeyboardInterrupt, true))
        << "an ending interpreter is not interrupted";
  }
  finalize.Send();
  ASSERT_TRUE(Readable(interp->exit_fd(), 10000));
  EXPECT_TRUE(interp->Join(0));
  EXPECT_EQ(interp->state(), State::kFinished);
  EXPECT_TRUE(Readable(interp->done_fd())) << "done_fd stays readable";
  EXPECT_TRUE(interp->Close());
  EXPECT_EQ(interp->done_fd(), -1);
}

TEST_F(DriverTest, OutcomeIsAvailableAtDoneTime) {
  Pipe finalize;
  auto interp =
      Interpreter::Spawn(Fmt(kBlockFinalization, finalize.r()) + "import sys\nsys.exit(3)\n", "exit3", 0);
  ASSERT_TRUE(interp->WaitDone(10));
  const auto outcome = interp->outcome();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(interp->state(), State::kEnding);
  EXPECT_FALSE(outcome->ok);
  EXPECT_EQ(outcome->exit_code, 3);
  EXPECT_EQ(outcome->exc_type, "SystemExit");
  finalize.Send();
  ASSERT_TRUE(interp->Join(10));
  EXPECT_EQ(interp->outcome()->exit_code, 3) << "finishing does not change the outcome";
}

TEST_F(DriverTest, CloseWhileEndingReleasesTheFdsWhenFinished) {
  const int eventfds = EventFdCount();
  Pipe finalize;
  auto interp = Interpreter::Spawn(Fmt(kBlockFinalization, finalize.r()), "closed-ending", 0);
  EXPECT_EQ(EventFdCount(), eventfds + 2) << "done_fd and exit_fd";
  ASSERT_TRUE(interp->WaitDone(10));
  ASSERT_EQ(interp->state(), State::kEnding);
  EXPECT_TRUE(interp->Close()) << "closing an ending handle does not fail";
  EXPECT_TRUE(interp->closed());
  EXPECT_EQ(interp->done_fd(), -1);
  EXPECT_EQ(interp->exit_fd(), -1);
  EXPECT_TRUE(interp->Close()) << "idempotent";
  EXPECT_EQ(EventFdCount(), eventfds + 2) << "still open: the worker closes them when it finishes";
  finalize.Send();
  ASSERT_TRUE(interp->Join(10)) << "join works on a closed handle";
  EXPECT_EQ(interp->state(), State::kFinished);
  EXPECT_EQ(EventFdCount(), eventfds) << "the worker closed both fds (and wrote neither after close)";
  EXPECT_TRUE(interp->outcome()->ok);
}

TEST_F(DriverTest, AtexitCallbacksRunOnceBeforeDone) {
  Pipe calls;
  Pipe finalize;
  auto interp = Interpreter::Spawn(Fmt(kBlockFinalization, finalize.r()) +
                                       Fmt("import atexit\n"
                                           "atexit.register(os.write, {fd}, b'a')\n"
                                           "def failing():\n"
                                           "    raise RuntimeError('reported, and the others still run')\n"
                                           "atexit.register(failing)\n"
                                           "atexit.register(os.write, {fd}, b'b')\n",
                                           calls.w()),
                                   "atexit", 0);
  ASSERT_TRUE(Readable(interp->done_fd(), 10000));
  // Both bytes are there the moment done_fd is readable (last registered runs first).
  char got[3] = {};
  ASSERT_EQ(::read(calls.r(), got, 2), 2);
  EXPECT_STREQ(got, "ba");
  finalize.Send();
  ASSERT_TRUE(interp->Join(10));
  EXPECT_FALSE(Readable(calls.r())) << "Py_EndInterpreter ran an atexit callback a second time";
  EXPECT_TRUE(interp->outcome()->ok);
}

TEST_F(DriverTest, ShutdownGivesEndingInterpretersTheirOwnBound) {
  Pipe finalize;
  auto interp = Interpreter::Spawn(Fmt(kBlockFinalization, finalize.r()), "slow-finalizer", 0);
  ASSERT_TRUE(interp->WaitDone(10));
  std::vector<Snapshot> stuck;
  {
    Gil gil;
    EXPECT_TRUE(Shutdown(5.0, std::nullopt, std::nullopt).empty()) << "nullopt: ending ones are left alone";
    const auto t0 = Clock::now();
    stuck = Shutdown(5.0, std::nullopt, 0.1);
    EXPECT_LT(Since(t0), 2.0) << "nothing was running: only the finalize bound applies";
  }
  ASSERT_EQ(stuck.size(), 1u);
  EXPECT_EQ(stuck[0].state, State::kEnding) << "reported as still ending, not abandoned";
  EXPECT_EQ(interp->state(), State::kEnding);
  finalize.Send();
  {
    Gil gil;
    EXPECT_TRUE(Shutdown(0.0, std::nullopt, 10.0).empty());
  }
  EXPECT_EQ(interp->state(), State::kFinished);
  EXPECT_TRUE(interp->Join(0));
}

TEST_F(DriverTest, CloseRefusesWhileRunning) {
  Pipe release;
  auto interp = Interpreter::Spawn(Fmt("import os\nos.read({fd}, 1)\n", release.r()), "busy", 0);
  EXPECT_FALSE(interp->Close());
  EXPECT_FALSE(interp->closed());
  release.Send();
  ASSERT_TRUE(interp->Join(10));
  EXPECT_TRUE(interp->Close());
}

TEST_F(DriverTest, DumpStacksNamesTheSpinningFunction) {
  Pipe started;
  auto interp = Interpreter::Spawn(Fmt("import os\n"
                                       "def spin_here():\n"
                                       "    os.write({fd}, b'x')\n"
                                       "    while True: pass\n"
                                       "spin_here()\n",
                                       started.w()),
                                   "spinner", 0);
  ASSERT_TRUE(started.Receive());
  const std::string path = ::testing::TempDir() + "/dump-" + std::to_string(getpid()) + ".txt";
  std::remove(path.c_str());
  {
    Gil gil;
    DumpStacks(path);
    interp->Interrupt(PyExc_KeyboardInterrupt, true);
  }
  ASSERT_TRUE(interp->Join(5));
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  std::remove(path.c_str());
  const std::string dump = text.str();
  EXPECT_NE(dump.find("in spin_here"), std::string::npos) << dump;
  EXPECT_NE(dump.find("'spinner' (driver: running"), std::string::npos) << dump;
  EXPECT_NE(dump.find("interpreter 0 (main)"), std::string::npos) << dump;
}

TEST_F(DriverTest, LabelsShowInDumpsAndEndWithTheInterpreter) {
  Pipe started, release;
  auto interp = Interpreter::Spawn(StartThenBlockInC(started, release), "pooled", 0);
  ASSERT_TRUE(started.Receive());
  const int64_t id = *interp->Snap().id;
  Registry::Get().SetLabel(id, "actor 'worker'");
  EXPECT_EQ(Registry::Get().Labels().at(id), "actor 'worker'");
  const std::string path = ::testing::TempDir() + "/labels-" + std::to_string(getpid()) + ".txt";
  std::remove(path.c_str());
  {
    Gil gil;
    DumpStacks(path);
  }
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  std::remove(path.c_str());
  EXPECT_NE(text.str().find("'pooled' (driver: running"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("[actor 'worker']"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find(kDumpEnd), std::string::npos) << text.str();
  release.Send();
  ASSERT_TRUE(interp->Join(10));
  EXPECT_FALSE(Registry::Get().Labels().contains(id));
  Registry::Get().SetLabel(0, "root");
  Registry::Get().SetLabel(0, "");
  EXPECT_FALSE(Registry::Get().Labels().contains(0));
}

}  // namespace
}  // namespace subactor::testing
