// GoogleTest for the finalize gate: when a done interpreter may finalize (quiet GIL, deferral bound, hurry,
// one at a time, a stuck one not holding up the line). Uses its own gates over a fake GIL "locked" word.
#include "finalize_gate.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace subactor::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Timing = FinalizeGate::Timing;

constexpr std::chrono::microseconds kNever = 100s;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

TEST(FinalizeGateTest, GoesOnceTheGilWasFreeForTheQuietWindow) {
  FinalizeGate gate(Timing{100us, 2ms, kNever, kNever});
  const int locked = 0;
  const auto t0 = Clock::now();
  const auto turn = gate.Enter(&locked);
  EXPECT_GE(MsSince(t0), 2.0);
  gate.Leave(turn);
}

TEST(FinalizeGateTest, ABusyGilDefersItUpToTheBound) {
  FinalizeGate gate(Timing{100us, 2ms, 150ms, kNever});
  const int locked = 1;
  const auto t0 = Clock::now();
  const auto turn = gate.Enter(&locked);
  EXPECT_GE(MsSince(t0), 150.0) << "the GIL never looked free: only the deferral bound lets it go";
  gate.Leave(turn);
}

TEST(FinalizeGateTest, SomeoneWaitingForAFinishLetsItGoAtOnce) {
  FinalizeGate gate(Timing{100us, 2ms, kNever, kNever});
  const int locked = 1;
  std::atomic<bool> entered = false;
  std::thread worker([&] {
    gate.Leave(gate.Enter(&locked));
    entered = true;
  });
  EXPECT_FALSE(entered);  // busy GIL, no bound in sight: it waits (until the hurry below)
  gate.Hurry(+1);
  worker.join();  // would hang (100 s bound) without the hurry
  EXPECT_TRUE(entered);
  gate.Hurry(-1);
}

TEST(FinalizeGateTest, OneAtATime) {
  FinalizeGate gate(Timing{100us, 1ms, kNever, kNever});
  const int locked = 0;
  const auto first = gate.Enter(&locked);
  std::atomic<bool> first_left = false;
  std::atomic<bool> second_saw_first_left = false;
  std::thread second([&] {
    const auto turn = gate.Enter(&locked);
    second_saw_first_left = first_left.load();
    gate.Leave(turn);
  });
  std::this_thread::sleep_for(50ms);  // plenty of quiet windows: only the running one holds it back
  first_left = true;
  gate.Leave(first);
  second.join();
  EXPECT_TRUE(second_saw_first_left);
}

TEST(FinalizeGateTest, AStuckFinalizationStopsHoldingUpTheLine) {
  FinalizeGate gate(Timing{100us, 1ms, kNever, 100ms});
  const int locked = 0;
  const auto stuck = gate.Enter(&locked);
  const auto t0 = Clock::now();
  const auto next = gate.Enter(&locked);
  EXPECT_GE(MsSince(t0), 90.0) << "it waited for the stuck one up to the bound";
  gate.Leave(next);
  gate.Leave(stuck);
}

TEST(FinalizeGateTest, LeaveSaysWhetherItEndsARunOfFinalizations) {
  // The worker that leaves last trims the C heap (interpreter.cpp): not while another waits in line.
  FinalizeGate gate(Timing{100us, 1ms, kNever, kNever});
  const int locked = 0;
  const auto first = gate.Enter(&locked);
  std::atomic<bool> second_was_last = false;
  std::thread second([&] { second_was_last = gate.Leave(gate.Enter(&locked)); });
  std::this_thread::sleep_for(50ms);  // the second has taken its ticket and waits behind the first
  EXPECT_FALSE(gate.Leave(first));
  second.join();
  EXPECT_TRUE(second_was_last);
  EXPECT_TRUE(gate.Leave(gate.Enter(&locked)));  // alone
}

}  // namespace
}  // namespace subactor::testing
