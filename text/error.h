// The exception every lowbit::text failure throws. Messages name the file, the
// JSON key path or argument, the offending value and what is supported.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lowbit::text {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error("lowbit::text: " + the parts streamed one after another).
template <typename... Parts>
[[noreturn]] void throw_error(const Parts&... parts) {
  std::ostringstream message;
  message << "lowbit::text: ";
  (message << ... << parts);
  throw Error(message.str());
}

}  // namespace lowbit::text
