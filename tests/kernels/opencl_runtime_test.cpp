// OpenCL plumbing: a program that fails to build reports the device's build
// log; sources can be read from disk (LOWBIT_OPENCL_SOURCE_DIR); programs are
// built once per device and cached.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "kernels/opencl/opencl_backend.h"
#include "tests/kernels/backends.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;

// Points LOWBIT_OPENCL_SOURCE_DIR at a scratch kernels/ folder for one test.
class SourceDir {
 public:
  SourceDir() : root_(fs::path(::testing::TempDir()) / "lowbit_cl_sources") {
    fs::create_directories(root_ / "opencl");
    std::ofstream(root_ / "shared_math.h") << "/* prelude */\n";
    setenv("LOWBIT_OPENCL_SOURCE_DIR", root_.c_str(), 1);
  }
  ~SourceDir() {
    unsetenv("LOWBIT_OPENCL_SOURCE_DIR");
    fs::remove_all(root_);
  }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(root_ / "opencl" / (name + ".cl")) << text;
  }

 private:
  fs::path root_;
};

kernels::opencl::DeviceContext& context_of(kernels::Backend& b) {
  return static_cast<kernels::opencl::OpenClBackend&>(b).context();
}

TEST(OpenClRuntime, BuildFailureCarriesTheBuildLog) {
  LOWBIT_REQUIRE_OPENCL(cl);
  SourceDir dir;
  dir.write("broken_for_test", "__kernel void k(__global float* x) { x[0] = undeclared_name; }\n");
  try {
    context_of(*cl).program("broken_for_test");
    FAIL() << "a program with an undeclared identifier built";
  } catch (const kernels::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("building OpenCL program 'broken_for_test'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Build log"), std::string::npos) << msg;
    EXPECT_NE(msg.find("undeclared_name"), std::string::npos) << msg;  // the compiler's words
  }
}

TEST(OpenClRuntime, ProgramsAreCachedPerDevice) {
  LOWBIT_REQUIRE_OPENCL(cl);
  SourceDir dir;
  dir.write("cached_for_test", "__kernel void k(__global float* x) { x[0] = 1.0f; }\n");
  auto& ctx = context_of(*cl);
  const cl_program first = ctx.program("cached_for_test");
  dir.write("cached_for_test", "this would not compile");  // a rebuild would throw
  EXPECT_EQ(ctx.program("cached_for_test"), first);
  // Different build options are a different program.
  EXPECT_THROW(ctx.program("cached_for_test", "-DVARIANT=1"), kernels::Error);
}

TEST(OpenClRuntime, MissingSourceFileIsNamed) {
  LOWBIT_REQUIRE_OPENCL(cl);
  SourceDir dir;
  try {
    context_of(*cl).program("no_such_program");
    FAIL() << "built a program without a source";
  } catch (const kernels::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_program.cl"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowbit
