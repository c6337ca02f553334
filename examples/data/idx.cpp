#include "examples/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <memory>
#include <vector>

namespace lowbit::data {
namespace {

// An IDX file holds at most this many data bytes (Fashion-MNIST's largest
// holds 47 MB): the header's dimensions alone must not decide how much a
// reader allocates, nor overflow the product that counts the bytes.
constexpr uint64_t kMaxDataBytes = uint64_t(1) << 32;

using GzFile = std::unique_ptr<gzFile_s, int (*)(gzFile)>;

// Up to `size` (decompressed) bytes; fewer only at the end of the file.
// gzread passes plain files through unchanged.
size_t read_some(gzFile f, uint8_t* out, size_t size, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    const unsigned want = unsigned(std::min<size_t>(size - done, 1u << 20));
    const int got = gzread(f, out + done, want);
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      TORCH_CHECK(false, "'", path, "' is not a valid gzip file: ", msg);
    }
    if (got == 0) break;
    done += size_t(got);
  }
  return done;
}

// Throws unless the stream ended cleanly (not a gzip stream cut short).
void check_clean_end(gzFile f, const std::string& path) {
  int err = 0;
  gzerror(f, &err);
  // zlib reports a gzip stream that stops before its end as Z_BUF_ERROR.
  TORCH_CHECK(err != Z_BUF_ERROR, "'", path,
              "' is truncated or corrupt: its gzip stream ends early");
  TORCH_CHECK(err == Z_OK, "'", path, "' is truncated or corrupt");
}

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

}  // namespace

torch::Tensor read_idx_u8(const std::string& path) {
  GzFile f(gzopen(path.c_str(), "rb"), gzclose);
  TORCH_CHECK(f != nullptr, "cannot open '", path, "' (is the dataset package installed?)");
  uint8_t header[4 + 4 * 4];
  const size_t got = read_some(f.get(), header, 4, path);
  TORCH_CHECK(got == 4, "'", path, "' is too short for an IDX header (", got, " bytes)");
  TORCH_CHECK(header[0] == 0 && header[1] == 0, "'", path, "' does not start with the IDX magic");
  TORCH_CHECK(header[2] == 0x08, "'", path, "' holds IDX type 0x", std::hex, int(header[2]),
              "; expected 0x08 (unsigned byte)");
  const int ndim = header[3];
  TORCH_CHECK(ndim >= 1 && ndim <= 4, "'", path, "' declares ", ndim,
              " dimensions; expected 1 to 4");
  TORCH_CHECK(read_some(f.get(), header + 4, 4 * size_t(ndim), path) == 4 * size_t(ndim), "'",
              path, "' is truncated inside its header");
  std::vector<int64_t> shape;
  uint64_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint32_t dim = be32(&header[4 + 4 * size_t(d)]);
    TORCH_CHECK(dim > 0 && dim <= (1u << 28), "'", path, "' dimension ", d, " is ", dim);
    TORCH_CHECK(count <= kMaxDataBytes / dim, "'", path, "' has dimensions whose product exceeds ",
                kMaxDataBytes, " bytes; the header is corrupt");
    shape.push_back(int64_t(dim));
    count *= dim;
  }
  // The data is read in pieces, so memory follows the bytes really present;
  // one byte past the promise is enough to tell trailing bytes.
  std::vector<uint8_t> data;
  for (;;) {
    const size_t before = data.size();
    data.resize(before + std::min<uint64_t>(count + 1 - before, 1u << 20));
    const size_t got_data = read_some(f.get(), data.data() + before, data.size() - before, path);
    data.resize(before + got_data);
    if (got_data == 0 || data.size() > count) break;
  }
  if (data.size() <= count) check_clean_end(f.get(), path);
  TORCH_CHECK(data.size() == count, "'", path, "' holds ", data.size() > count ? "more than " : "",
              data.size() > count ? count : data.size(), " data bytes; its header promises ", count);
  return torch::from_blob(data.data(), shape, torch::kUInt8).clone();
}

ImageSet load_fashion_mnist(const std::string& dir, const std::string& split, int64_t limit) {
  TORCH_CHECK(split == "train" || split == "t10k", "Fashion-MNIST split '", split,
              "' is unknown; expected train or t10k");
  const std::string images_path = dir + "/" + split + "-images-idx3-ubyte.gz";
  const std::string labels_path = dir + "/" + split + "-labels-idx1-ubyte.gz";
  torch::Tensor images = read_idx_u8(images_path);
  torch::Tensor labels = read_idx_u8(labels_path);
  TORCH_CHECK(images.dim() == 3 && images.size(1) == 28 && images.size(2) == 28, "'", images_path,
              "' has shape ", images.sizes(), "; expected [N, 28, 28]");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == images.size(0), "'", labels_path, "' holds ",
              labels.numel(), " labels for ", images.size(0), " images");
  TORCH_CHECK(labels.max().item<int64_t>() <= 9, "'", labels_path,
              "' has a label above 9; Fashion-MNIST has 10 classes");
  if (limit > 0 && limit < images.size(0)) {
    images = images.slice(0, 0, limit);
    labels = labels.slice(0, 0, limit);
  }
  return {images.unsqueeze(1).to(torch::kFloat32).div_(255.0f).contiguous(),
          labels.to(torch::kInt64).contiguous()};
}

}  // namespace lowbit::data
