// The IDX reader on Debian's Fashion-MNIST files (class balance as published)
// and on files built here byte by byte: exact contents, and every kind of
// damage (truncation, bad magic or type, corrupt gzip, mismatched labels)
// refused naming the file.
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "examples/data/idx.h"
#include "tests/support/expect_error.h"
#include "tests/support/scratch_dir.h"

namespace lowbit::data {
namespace {

namespace fs = std::filesystem;
using lowbit::testing::message_of;
using lowbit::testing::ScratchDir;

const std::string kDir = "/usr/share/datasets/fashion-mnist";

// An IDX header: magic 0x0000 0x08 ndim, then big-endian uint32 dims.
std::string idx_header(const std::vector<uint32_t>& dims, uint8_t type = 0x08) {
  std::string h = {0, 0, char(type), char(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) h += char((d >> shift) & 0xff);
  }
  return h;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  gzclose(f);
}

TEST(Idx, FashionMnistHasTheBalancedClassesOfThePaper) {
  // Xiao et al. 2017: 60,000 training and 10,000 test images of 28x28, 10
  // classes with 6,000 and 1,000 images each.
  const ImageSet train = load_fashion_mnist(kDir, "train");
  const ImageSet test = load_fashion_mnist(kDir, "t10k");
  EXPECT_EQ(train.images.sizes(), torch::IntArrayRef({60000, 1, 28, 28}));
  EXPECT_EQ(test.images.sizes(), torch::IntArrayRef({10000, 1, 28, 28}));
  EXPECT_TRUE(torch::bincount(train.labels).equal(torch::full({10}, 6000, torch::kInt64)));
  EXPECT_TRUE(torch::bincount(test.labels).equal(torch::full({10}, 1000, torch::kInt64)));
  EXPECT_GE(train.images.min().item<float>(), 0.0f);
  EXPECT_LE(train.images.max().item<float>(), 1.0f);
  EXPECT_EQ(load_fashion_mnist(kDir, "t10k", 25).labels.numel(), 25);
}

TEST(Idx, ReadsPlainAndGzipFilesExactly) {
  ScratchDir dir;
  std::string data;
  for (int i = 0; i < 2 * 3 * 4; ++i) data += char(i * 7);
  dir.write("plain.idx", idx_header({2, 3, 4}) + data);
  write_gzip(dir.file("packed.idx.gz"), idx_header({2, 3, 4}) + data);
  for (const char* name : {"plain.idx", "packed.idx.gz"}) {
    const torch::Tensor t = read_idx_u8(dir.file(name));
    ASSERT_EQ(t.sizes(), torch::IntArrayRef({2, 3, 4}));
    for (int i = 0; i < 24; ++i) EXPECT_EQ(t.flatten()[i].item<int>(), (i * 7) & 0xff) << name;
  }
}

TEST(Idx, RefusesDamagedFilesByName) {
  ScratchDir dir;
  const std::string body(24, '\1');
  auto refused = [&](const std::string& name, const std::string& fragment) {
    const std::string m = message_of([&] { read_idx_u8(dir.file(name)); });
    EXPECT_NE(m.find(dir.file(name)), std::string::npos) << m;
    EXPECT_NE(m.find(fragment), std::string::npos) << fragment << " not in: " << m;
  };
  dir.write("short_data.idx", idx_header({2, 3, 4}) + body.substr(0, 20));
  refused("short_data.idx", "its header promises 24");
  dir.write("long_data.idx", idx_header({2, 3, 4}) + body + "x");
  refused("long_data.idx", "its header promises 24");
  dir.write("float.idx", idx_header({24}, 0x0D) + std::string(96, '\0'));
  refused("float.idx", "expected 0x08");
  dir.write("magic.idx", "\x01\x02\x08\x01" + body);
  refused("magic.idx", "IDX magic");
  dir.write("header.idx", idx_header({2, 3, 4}).substr(0, 9));
  refused("header.idx", "truncated inside its header");

  // The real training images cut to half, and with bytes flipped inside the
  // deflate stream.
  fs::copy_file(kDir + "/train-images-idx3-ubyte.gz", dir.file("cut.gz"));
  fs::resize_file(dir.file("cut.gz"), fs::file_size(dir.file("cut.gz")) / 2);
  refused("cut.gz", "truncated or corrupt");
  write_gzip(dir.file("flipped.gz"), idx_header({1000}) + std::string(1000, 'a'));
  {
    std::fstream f(dir.file("flipped.gz"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(14);
    f.write("\xff\xff\xff\xff", 4);
  }
  EXPECT_NE(message_of([&] { read_idx_u8(dir.file("flipped.gz")); }), "(no exception)");
  refused("missing.gz", "cannot open");
}

// Found while writing tests/fuzz/idx_fuzz: four dimensions of 2^28 multiply
// to 2^112, which wrapped to 0 in 64 bits, so a header without data passed
// the size check and only libtorch's shape check stopped it, with a message
// naming no file. The product is now bounded before it is formed, and the
// data is read piecewise, so a header alone never decides what is allocated.
TEST(Idx, DimensionsWhoseProductOverflowsAreRefused) {
  ScratchDir dir;
  const uint32_t big = 1u << 28;
  dir.write("wrapped.idx", idx_header({big, big, big, big}));
  const std::string m = message_of([&] { read_idx_u8(dir.file("wrapped.idx")); });
  EXPECT_NE(m.find(dir.file("wrapped.idx")), std::string::npos) << m;
  EXPECT_NE(m.find("dimensions whose product exceeds 4294967296 bytes"), std::string::npos) << m;
  // A header that promises 256 MiB over a 3-byte body: refused for what is
  // there, without reserving what was promised.
  dir.write("promise.idx", idx_header({big}) + "abc");
  EXPECT_NE(message_of([&] { read_idx_u8(dir.file("promise.idx")); })
                .find("holds 3 data bytes; its header promises 268435456"),
            std::string::npos);
}

TEST(Idx, RefusesImagesAndLabelsThatDisagree) {
  ScratchDir dir;
  write_gzip(dir.file("train-images-idx3-ubyte.gz"),
             idx_header({3, 28, 28}) + std::string(3 * 784, '\0'));
  write_gzip(dir.file("train-labels-idx1-ubyte.gz"), idx_header({2}) + std::string("\1\2"));
  EXPECT_NE(
      message_of([&] { load_fashion_mnist(dir.path(), "train"); }).find("2 labels for 3 images"),
      std::string::npos);
  write_gzip(dir.file("train-labels-idx1-ubyte.gz"), idx_header({3}) + std::string("\1\2\12"));
  EXPECT_NE(message_of([&] { load_fashion_mnist(dir.path(), "train"); }).find("label above 9"),
            std::string::npos);
  EXPECT_NE(message_of([&] { load_fashion_mnist(dir.path(), "valid"); }).find("split 'valid'"),
            std::string::npos);
}

}  // namespace
}  // namespace lowbit::data
