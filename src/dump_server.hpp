// Dumps on request from outside the process: a UNIX socket served by the driver's io thread.
#pragma once

#include <string>

namespace subactor {

// Listens on a new UNIX stream socket at path (mode 0600; path must not exist) and answers every connection
// with a full dump (WriteDriverView, then with the GIL WriteStacks, then kDumpEnd) before closing it. The
// accept loop and the dumps run on the io thread, so they need neither the main thread nor a signal. One
// server per process: throws std::runtime_error if one is running, std::system_error if the socket cannot
// be made. Needs no GIL.
//
// Typical usage:
//   ServeDumps("/run/user/1000/subactor/dump-42.sock");
//   ...  // `python -m subactor.devx dump 42` connects and reads a dump
//   StopServingDumps();  // the caller unlinks the path
void ServeDumps(const std::string& path);

// Stops accepting (connections being answered finish). Returns false if no server was running.
bool StopServingDumps();

}  // namespace subactor
