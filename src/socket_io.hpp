// Non-blocking socket reads and writes made while holding the GIL (the `send_nowait`/`recv_nowait` bindings).
#pragma once

#include <pybind11/pybind11.h>

namespace subactor {

// Adds send_nowait(fd, data) and recv_nowait(fd, max_bytes) to the module.
void BindSocketIo(pybind11::module_& m);

}  // namespace subactor
