#include "examples/data/idx.h"

#include <zlib.h>

#include <memory>
#include <vector>

namespace lowbit::data {
namespace {

// The whole (decompressed) file. gzread passes plain files through unchanged.
std::vector<uint8_t> read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  TORCH_CHECK(f != nullptr, "cannot open '", path, "' (is the dataset package installed?)");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> guard(f, gzclose);
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 20);
  for (;;) {
    const int got = gzread(f, chunk.data(), unsigned(chunk.size()));
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      TORCH_CHECK(false, "'", path, "' is not a valid gzip file: ", msg);
    }
    if (got == 0) break;
    out.insert(out.end(), chunk.begin(), chunk.begin() + got);
  }
  int err = 0;
  gzerror(f, &err);
  // zlib reports a gzip stream that stops before its end as Z_BUF_ERROR.
  TORCH_CHECK(err != Z_BUF_ERROR, "'", path,
              "' is truncated or corrupt: its gzip stream ends early");
  TORCH_CHECK(err == Z_OK, "'", path, "' is truncated or corrupt");
  return out;
}

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

}  // namespace

torch::Tensor read_idx_u8(const std::string& path) {
  const std::vector<uint8_t> bytes = read_gz(path);
  TORCH_CHECK(bytes.size() >= 4, "'", path, "' is too short for an IDX header (", bytes.size(),
              " bytes)");
  TORCH_CHECK(bytes[0] == 0 && bytes[1] == 0, "'", path, "' does not start with the IDX magic");
  TORCH_CHECK(bytes[2] == 0x08, "'", path, "' holds IDX type 0x", std::hex, int(bytes[2]),
              "; expected 0x08 (unsigned byte)");
  const int ndim = bytes[3];
  TORCH_CHECK(ndim >= 1 && ndim <= 4, "'", path, "' declares ", ndim,
              " dimensions; expected 1 to 4");
  const size_t header = 4 + 4 * size_t(ndim);
  TORCH_CHECK(bytes.size() >= header, "'", path, "' is truncated inside its header");
  std::vector<int64_t> shape;
  size_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint32_t dim = be32(&bytes[4 + 4 * size_t(d)]);
    TORCH_CHECK(dim > 0 && dim <= (1u << 28), "'", path, "' dimension ", d, " is ", dim);
    shape.push_back(int64_t(dim));
    count *= dim;
  }
  TORCH_CHECK(bytes.size() - header == count, "'", path, "' holds ", bytes.size() - header,
              " data bytes; its header promises ", count);
  return torch::from_blob(const_cast<uint8_t*>(bytes.data() + header), shape, torch::kUInt8)
      .clone();
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
