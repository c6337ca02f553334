// Progress output: plain lines every N steps with the loss averaged since the
// previous line (logs, CI), a bar redrawn in place on a terminal, nothing in
// "none" mode; messages always as whole lines.
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "examples/train/progress.h"

namespace lowbit::train {
namespace {

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(Progress, ChoosesTheBarOnlyOnATerminal) {
  EXPECT_EQ(Progress::resolve("auto", true), Progress::Mode::Bar);
  EXPECT_EQ(Progress::resolve("auto", false), Progress::Mode::Lines);
  EXPECT_EQ(Progress::resolve("bar", false), Progress::Mode::Bar);
  EXPECT_EQ(Progress::resolve("none", true), Progress::Mode::None);
  EXPECT_THROW(Progress::resolve("fancy", true), c10::Error);
}

TEST(Progress, LinesAverageTheLossSinceThePreviousLine) {
  std::ostringstream out;
  Progress p(Progress::Mode::Lines, 0, 5, 2, out);
  for (int step = 1; step <= 5; ++step) p.step(step, double(step), 1e-3, 0.01);
  p.message("step 5 eval: loss 1");
  p.finish();
  const std::string text = out.str();
  // Lines at steps 2 and 4 (every 2) and at the last step; losses (1+2)/2,
  // (3+4)/2 and 5.
  EXPECT_NE(text.find("step 2/5  loss 1.5000  lr 1.00e-03  10.0 ms/step"), std::string::npos)
      << text;
  EXPECT_NE(text.find("step 4/5  loss 3.5000"), std::string::npos) << text;
  EXPECT_NE(text.find("step 5/5  loss 5.0000"), std::string::npos) << text;
  EXPECT_EQ(count(text, "\n"), 4u);
  EXPECT_EQ(text.find('\r'), std::string::npos);  // no terminal control in logs
}

TEST(Progress, TheBarRedrawsInPlaceAndMessagesClearIt) {
  std::ostringstream out;
  Progress p(Progress::Mode::Bar, 10, 20, 5, out);
  p.step(11, 2.0, 1e-3, 0.01);
  p.message("saved");
  p.step(12, 2.0, 1e-3, 0.01);
  p.step(20, 1.0, 1e-3, 0.01);  // the last step always draws
  p.finish();
  const std::string text = out.str();
  EXPECT_NE(text.find("] 11/20  loss 2.0000"), std::string::npos) << text;
  EXPECT_NE(text.find("\r\033[Ksaved\n"), std::string::npos) << text;
  EXPECT_NE(text.find("[########################] 20/20"), std::string::npos) << text;
  EXPECT_EQ(count(text, "\n"), 2u);  // the message and the finished bar
  EXPECT_EQ(text.back(), '\n');
}

TEST(Progress, NoneStaysSilentAndDurationsRead) {
  std::ostringstream out;
  Progress p(Progress::Mode::None, 0, 3, 1, out);
  p.step(1, 1.0, 1.0, 1.0);
  p.message("x");
  p.finish();
  EXPECT_TRUE(out.str().empty());
  EXPECT_EQ(format_duration(65), "1:05");
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(-3), "0:00");
}

}  // namespace
}  // namespace lowbit::train
