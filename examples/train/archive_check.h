// Checks a torch archive (the zip that torch::serialize::OutputArchive
// writes) before libtorch reads any of it. libtorch trusts the archive's
// length fields and its TorchScript class source: a few changed bytes made it
// allocate gigabytes or crash in its source parser (checkpoint_fuzz's
// findings), so the checkpoint reader runs this on every archive first.
#pragma once

#include <memory>

#include <caffe2/serialize/read_adapter_interface.h>

namespace lowbit::train {

// Throws c10::Error naming the record and what was expected (callers add the
// file's name) unless every record of `archive`
// - is one that OutputArchive writes (data.pkl, data/<n>, constants.pkl,
//   code/**.py and their .debug_pkl, the version records), named once,
// - lies inside the archive and claims no more uncompressed bytes than its
//   compressed ones can hold (stored: as many; deflate: 1032 times as many),
// - if a pickle, holds no length or memo index past its own bytes, and
//   gives no storage more bytes than its record holds,
// - if class source, consists of the lines OutputArchive's classes print as.
void check_torch_archive(const std::shared_ptr<caffe2::serialize::ReadAdapterInterface>& archive);

}  // namespace lowbit::train
