// The dump server: an Asio UNIX-socket acceptor on the driver's io thread that writes one dump per
// connection.
#include "dump_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "io_loop.hpp"
#include "stacks.hpp"

namespace subactor {
namespace {

using asio::local::stream_protocol;

std::mutex server_mu;
std::shared_ptr<stream_protocol::acceptor>* server =
    new std::shared_ptr<stream_protocol::acceptor>();  // GUARDED_BY(server_mu), leaked like the loop

// Writes text to the memory stream fn fills; returns it.
template <typename Fn>
std::string Format(Fn&& fn) {
  char* text = nullptr;
  size_t size = 0;
  std::FILE* mem = open_memstream(&text, &size);
  if (mem == nullptr) return "subactor: out of memory\n";
  fn(mem);
  std::fclose(mem);
  std::string out(text, size);
  std::free(text);
  return out;
}

// One dump per connection. The GIL-free part (header, driver's view) is written at once, so a client whose
// answer never completes (a thread holding the GIL in C forever) still learns what the driver knows.
void Answer(stream_protocol::socket peer) {
  auto conn = std::make_shared<stream_protocol::socket>(std::move(peer));
  const std::string head = Format([](std::FILE* mem) {
    std::fprintf(mem, "=== subactor stack dump on request: pid %d, most recent call last ===\n",
                 static_cast<int>(getpid()));
    WriteDriverView(mem);
  });
  std::error_code ignored;
  asio::write(*conn, asio::buffer(head), ignored);
  auto rest = std::make_shared<std::string>(Format([](std::FILE* mem) {
    if (!WithGil([mem] { WriteHookOrStacks(mem, "request", ""); })) {
      std::fputs("(runtime finalizing: stacks not read)\n", mem);
    }
    std::fputs(kDumpEnd, mem);
  }));
  asio::async_write(*conn, asio::buffer(*rest), [conn, rest](const std::error_code&, size_t) {});
}

void Accept(const std::shared_ptr<stream_protocol::acceptor>& acceptor) {
  acceptor->async_accept([acceptor](const std::error_code& error, stream_protocol::socket peer) {
    if (error == asio::error::operation_aborted || !acceptor->is_open()) return;
    if (!error) Answer(std::move(peer));
    Accept(acceptor);
  });
}

}  // namespace

void ServeDumps(const std::string& path) {
  std::lock_guard lock(server_mu);
  if (*server) throw std::runtime_error("this process already serves dumps");
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long: '" + path + "'");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, path.size());
  // Only this user may connect: the socket file is made 0600 before listening (the umask is process-wide,
  // so it is not touched; callers put the socket in a 0700 directory as well).
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::chmod(path.c_str(), 0600) < 0 ||
      ::listen(fd, 8) < 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "cannot listen on '" + path + "'");
  }
  auto acceptor = std::make_shared<stream_protocol::acceptor>(IoLoop::Get().context());
  acceptor->assign(stream_protocol(), fd);
  *server = acceptor;
  asio::post(IoLoop::Get().context(), [acceptor] { Accept(acceptor); });
}

bool StopServingDumps() {
  std::shared_ptr<stream_protocol::acceptor> acceptor;
  {
    std::lock_guard lock(server_mu);
    acceptor = std::exchange(*server, nullptr);
  }
  if (!acceptor) return false;
  asio::post(IoLoop::Get().context(), [acceptor] {
    std::error_code ignored;
    acceptor->close(ignored);
  });
  return true;
}

}  // namespace subactor
