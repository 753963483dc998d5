// Non-blocking socket reads and writes made while holding the GIL (the `send_nowait`/`recv_nowait` bindings).
//
// Why: os.write/os.read and socket.send/recv release the GIL around every call, even on a non-blocking socket
// that cannot block. Under a subinterpreter's shared GIL that release is an invitation: the peer
// interpreter's thread, waiting for the GIL to read what we wrote, takes it mid-burst, and the writer waits
// for it back on every message (a handoff per message: a stream of small messages ran at a third of a process
// pair's rate). MSG_DONTWAIT makes each call non-blocking whatever the fd's own flags, so holding the GIL
// across it is safe; MSG_NOSIGNAL turns a write to a closed peer into EPIPE instead of SIGPIPE.
#include "socket_io.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <string>

namespace py = pybind11;

namespace subactor {
namespace {

[[noreturn]] void RaiseErrno() {
  PyErr_SetFromErrno(PyExc_OSError);  // EAGAIN becomes BlockingIOError, EPIPE BrokenPipeError, ...
  throw py::error_already_set();
}

void CheckFd(int fd) {
  if (fd < 0) throw py::value_error("fd must be an open file descriptor (>= 0), not " + std::to_string(fd));
}

Py_ssize_t SendNowait(int fd, const py::buffer& data) {
  CheckFd(fd);
  const py::buffer_info info = data.request();
  if (!PyBuffer_IsContiguous(info.view(), 'C')) throw py::value_error("data must be a contiguous buffer");
  const auto size = static_cast<size_t>(info.size * info.itemsize);
  for (;;) {
    const ssize_t sent = ::send(fd, info.ptr, size, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0) return sent;
    if (errno != EINTR) RaiseErrno();
  }
}

py::bytes RecvNowait(int fd, Py_ssize_t max_bytes) {
  CheckFd(fd);
  if (max_bytes <= 0) throw py::value_error("max_bytes must be > 0, not " + std::to_string(max_bytes));
  PyObject* out = PyBytes_FromStringAndSize(nullptr, max_bytes);
  if (out == nullptr) throw py::error_already_set();
  ssize_t got = -1;
  do {
    got = ::recv(fd, PyBytes_AS_STRING(out), static_cast<size_t>(max_bytes), MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    const int err = errno;
    Py_DECREF(out);
    errno = err;
    RaiseErrno();
  }
  if (got < max_bytes && _PyBytes_Resize(&out, got) < 0) throw py::error_already_set();
  return py::reinterpret_steal<py::bytes>(out);
}

}  // namespace

void BindSocketIo(py::module_& m) {
  m.def("send_nowait", &SendNowait, py::arg("fd"), py::arg("data"),
        "Send what of `data` the socket `fd` takes now, holding the GIL; the byte count. BlockingIOError "
        "when it takes nothing, OSError on a broken connection (never SIGPIPE)");
  m.def("recv_nowait", &RecvNowait, py::arg("fd"), py::arg("max_bytes"),
        "Up to max_bytes bytes the socket `fd` holds now, read holding the GIL; b'' at end of stream. "
        "BlockingIOError when it holds none");
}

}  // namespace subactor
