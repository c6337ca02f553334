// The exception every kernels-layer failure throws: a message naming the op,
// the argument and what was expected.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lowbit::kernels {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An Error from an op that changes several buffers and, failing midway, put
// back what it had changed: its buffers are as before the call.
class NothingChanged : public Error {
 public:
  using Error::Error;
};

// LOWBIT_CHECK(cond, parts...) throws Error with the parts streamed together.
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}

}  // namespace lowbit::kernels

#define LOWBIT_CHECK(cond, ...)                                     \
  do {                                                              \
    if (!(cond)) ::lowbit::kernels::fail("lowbit: ", __VA_ARGS__);  \
  } while (0)
