// Readers for the IDX files of (Fashion-)MNIST, gzip-compressed as Debian's
// dataset-fashion-mnist ships them under /usr/share/datasets/fashion-mnist.
#pragma once

#include <string>

#include <torch/types.h>

namespace lowbit::data {

// A gzip (or plain) IDX file: magic 0x00000800 | type << 8 | ndim, big-endian
// uint32 dims, then the data. Only unsigned-byte data (type 0x08) is accepted.
// Returns a uint8 tensor of the stored shape; every inconsistency (bad magic,
// truncated data, trailing bytes, corrupt gzip) throws naming the file.
torch::Tensor read_idx_u8(const std::string& path);

struct ImageSet {
  torch::Tensor images;  // float32 [N, 1, 28, 28] in [0, 1]
  torch::Tensor labels;  // int64 [N]
};

// Fashion-MNIST `split` ("train" or "t10k") from `dir`; `limit` > 0 keeps the
// first `limit` examples. Checks images and labels agree in count and range.
ImageSet load_fashion_mnist(const std::string& dir, const std::string& split, int64_t limit = 0);

}  // namespace lowbit::data
