// expect_error<E>(fn, needle): fn must throw an E whose message contains
// `needle` — errors are part of the contract, so tests check their words.
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace lowbit::testing {

template <typename E = std::exception, typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// expect_error_all<E>(fn, needles): the same with every needle in the message.
template <typename E = std::exception, typename Fn>
void expect_error_all(Fn&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needles.front() << "'";
  } catch (const E& e) {
    const std::string message = e.what();
    for (const auto& needle : needles)
      EXPECT_NE(message.find(needle), std::string::npos) << message;
  }
}

// The message of the exception `fn` throws, or "(no exception)": for tests that
// check several things about one message.
inline std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace lowbit::testing
