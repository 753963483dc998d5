// Exit-when-another-process-ends: the primitive under a process actor's orphan watchdog (no GIL, no event
// loop).
#pragma once

#include <cstdint>
#include <string>

namespace subactor {

// Starts a detached thread that waits for the process behind `pidfd` (from pidfd_open; duplicated here, the
// caller keeps and closes its own) to end, then waits `grace` seconds more and, unless disarmed meanwhile,
// writes `message` to stderr and leaves with _exit(status): no atexit, no finalization, nothing flushed. It
// involves neither the GIL nor any event loop, so it works while every Python thread spins or is stuck in C.
// Returns an id for DisarmExitWhenProcessEnds. Throws std::system_error when the fd cannot be duplicated or
// the thread cannot start.
//
// Typical usage (the policy, which process and which grace, is the caller's: _entry.py):
//   const int64_t id = ArmExitWhenProcessEnds(parent_pidfd, 4.0, "orphaned: exiting\n", 137);
//   ...
//   DisarmExitWhenProcessEnds(id);  // the actor ended on its own: the thread ends, the process stays
int64_t ArmExitWhenProcessEnds(int pidfd, double grace, std::string message, int status);

// Returns true if the watch was armed and had not fired (it never will now, and its thread ends).
bool DisarmExitWhenProcessEnds(int64_t id);

}  // namespace subactor
