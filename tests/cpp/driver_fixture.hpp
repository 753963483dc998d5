// Shared GoogleTest fixture for the driver: leak checks (handles, threads, interpreters) and small helpers.
#pragma once

#include <Python.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "registry.hpp"

namespace subactor::testing {

// Holds the GIL (a main-interpreter thread state) for a scope.
class Gil {
 public:
  Gil() : state_(PyGILState_Ensure()) {}
  ~Gil() { PyGILState_Release(state_); }
  Gil(const Gil&) = delete;
  Gil& operator=(const Gil&) = delete;

 private:
  PyGILState_STATE state_;
};

inline int ThreadCount() {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

inline int InterpreterCount() {
  Gil gil;
  int n = 0;
  for (PyInterpreterState* i = PyInterpreterState_Head(); i; i = PyInterpreterState_Next(i)) ++n;
  return n;
}

// A pipe the test and a child interpreter use to say "I got here" / "go on".
class Pipe {
 public:
  Pipe() { EXPECT_EQ(pipe2(fds_, O_CLOEXEC), 0); }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  int r() const { return fds_[0]; }
  int w() const { return fds_[1]; }
  void Send(int bytes = 1) const {
    for (int i = 0; i < bytes; ++i) ASSERT_EQ(::write(fds_[1], "x", 1), 1);
  }
  // Waits (bounded) for one byte.
  bool Receive(int timeout_ms = 10000) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return false;
    char c;
    return ::read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2] = {-1, -1};
};

inline double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Every test must leave no live handle, no extra OS thread and no extra interpreter behind.
class DriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    threads_ = ThreadCount();
    interpreters_ = InterpreterCount();
  }
  void TearDown() override {
    EXPECT_EQ(Registry::Get().LiveCount(), 0u);
    EXPECT_EQ(ThreadCount(), threads_);
    EXPECT_EQ(InterpreterCount(), interpreters_);
  }

 private:
  int threads_ = 0;
  int interpreters_ = 0;
};

}  // namespace subactor::testing
