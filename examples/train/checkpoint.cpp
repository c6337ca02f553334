#include "examples/train/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <map>
#include <regex>
#include <sstream>
#include <unordered_set>

#include <caffe2/serialize/file_adapter.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/serialize/output-archive.h>

#include "examples/error_text.h"
#include "examples/train/archive_check.h"
#include "quant/atomic_file.h"

namespace lowbit::train {
namespace {
namespace fs = std::filesystem;

// Format 2 wraps the archive of format 1 ("model", "optimizer", "trainer")
// as the bytes "payload" beside their "checksum", so that bytes changed on
// disk are found before anything is loaded (libtorch's zip reader does not
// check its CRCs). Format 1 files still load, unchecked.
constexpr const char* kFormat = "lowbit-train checkpoint 2";
constexpr const char* kFormatUnchecked = "lowbit-train checkpoint 1";
const std::regex kCheckpointName(R"(step-(\d{8,})\.ckpt)");

// CPU tensors whatever the model's device, so any machine reads the file
// (cpu() returns a CPU tensor itself: a CPU run's bytes are as before).
void write_model(torch::serialize::OutputArchive& archive, torch::nn::Module& model) {
  torch::NoGradGuard no_grad;  // a GPU parameter's host copy needs no autograd history
  torch::serialize::OutputArchive weights;
  for (const auto& p : model.named_parameters()) weights.write(p.key(), p.value().cpu());
  for (const auto& b : model.named_buffers()) {
    weights.write(b.key(), b.value().cpu(), /*is_buffer=*/true);
  }
  archive.write("model", weights);
}

std::string serialized(torch::serialize::OutputArchive& archive) {
  std::ostringstream bytes;
  archive.save_to(bytes);
  return bytes.str();
}

// A 64-bit checksum of `n` bytes. Each 8-byte word enters the state through
// bijections (an odd multiply, xor, rotate, odd multiply), so a change
// confined to one word always changes the result, and the length is mixed in
// first, so a truncation does too; other changes go unnoticed with
// probability about 2^-64. Not cryptographic: it guards against rot and
// partial writes, not against a forger.
uint64_t checksum64(const unsigned char* p, size_t n) {
  constexpr uint64_t k1 = 0x9e3779b97f4a7c15ull, k2 = 0xc2b2ae3d27d4eb4full;
  const auto mix = [&](uint64_t h, uint64_t w) {
    h ^= w * k1;
    h = (h << 31) | (h >> 33);
    return h * k2;
  };
  uint64_t h = mix(0x165667b19e3779f9ull, uint64_t(n));
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix(h, w);
  }
  uint64_t tail = 0;
  // Not for an empty payload, whose data pointer may be null (memcpy from
  // null is undefined even for 0 bytes: checkpoint_fuzz's first finding).
  if (n > i) std::memcpy(&tail, p + i, n - i);
  h = mix(h, tail);
  h ^= h >> 33;
  h *= k2;
  return h ^ (h >> 29);
}

}  // namespace

std::string seal_checkpoint_payload(std::string bytes) {
  const auto* data = reinterpret_cast<unsigned char*>(bytes.data());
  torch::serialize::OutputArchive outer;
  outer.write("format", c10::IValue(std::string(kFormat)));
  outer.write("payload", torch::from_blob(bytes.data(), {int64_t(bytes.size())}, torch::kUInt8));
  outer.write("checksum",
              torch::tensor(static_cast<int64_t>(checksum64(data, bytes.size())), torch::kInt64));
  return serialized(outer);
}

namespace {

// The file's bytes: `inner` serialized, wrapped with its checksum.
std::string sealed(torch::serialize::OutputArchive& inner) {
  return seal_checkpoint_payload(serialized(inner));
}

int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key,
                 const std::string& path) {
  torch::Tensor t;
  TORCH_CHECK(archive.try_read(key, t) && t.numel() == 1, path, ": checkpoint lacks '", key, "'");
  return t.item<int64_t>();
}

// Pairs each of the model's tensors with its stored value, every one
// checked first (present, same shape and dtype, no extra ones), so that a
// mismatch throws before anything of the model changes.
using WeightCopies = std::vector<std::pair<torch::Tensor, torch::Tensor>>;
WeightCopies checked_weights(torch::serialize::InputArchive& archive, torch::nn::Module& model,
                             const std::string& path) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : model.named_parameters()) targets[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) targets[b.key()] = b.value();
  WeightCopies copies;
  for (const auto& [name, target] : targets) {
    torch::Tensor stored;
    TORCH_CHECK(archive.try_read(name, stored), path, ": has no tensor '", name,
                "' of the model (was it written for another model or recipe?)");
    TORCH_CHECK(stored.sizes() == target.sizes() && stored.scalar_type() == target.scalar_type(),
                path, ": tensor '", name, "' is ", stored.scalar_type(), " ", stored.sizes(),
                "; the model's is ", target.scalar_type(), " ", target.sizes());
    copies.emplace_back(target, stored);
  }
  for (const std::string& key : archive.keys()) {
    TORCH_CHECK(targets.count(key), path, ": holds tensor '", key,
                "', which the model does not have (was it written for another model or recipe?)");
  }
  return copies;
}

// Copies each stored value into its target, or throws leaving every target
// as it was. The values are first moved to their targets' devices and dtypes
// (where a GPU model needs memory, it is taken before the model changes);
// a copy that fails then (the device fails, a target copy_ cannot write) is
// undone from host copies of the targets written before it, taken as they
// are written. A copy_ that throws has written nothing of its target
// (libtorch checks before it writes).
void copy_weights(const WeightCopies& copies) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> staged;
  staged.reserve(copies.size());
  for (const auto& [target, stored] : copies) {
    staged.push_back(stored.to(target.device(), target.scalar_type()));
  }
  std::vector<torch::Tensor> previous;
  previous.reserve(copies.size());
  try {
    for (size_t k = 0; k < copies.size(); ++k) {
      torch::Tensor backup = copies[k].first.to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true);
      copies[k].first.copy_(staged[k]);
      previous.push_back(std::move(backup));
    }
  } catch (const std::exception& e) {
    const std::string why = error_text(e);
    try {
      for (size_t k = 0; k < previous.size(); ++k) copies[k].first.copy_(previous[k]);
    } catch (const std::exception& again) {
      TORCH_CHECK(false, "copying the weights into the model failed (", why,
                  "), and so did putting back the ", previous.size(),
                  " tensors copied before: ", error_text(again));
    }
    TORCH_CHECK(false, "copying the weights into the model failed (", why, ")");
  }
}

// copy_weights, its errors naming the file.
void copy_weights(const WeightCopies& copies, const std::string& path) {
  try {
    copy_weights(copies);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, path, ": ", error_text(e), "; the model is as it was");
  }
}

// A payload read in memory with bounds checked. libtorch's MemoryReadAdapter
// (behind InputArchive::load_from(data, size)) copies from data + pos
// unchecked, and the zip reader asks for positions taken from the zip's own
// headers: a payload with a changed offset read out of bounds
// (checkpoint_fuzz's third finding). A read past the end returns 0 bytes,
// which the zip reader reports as an error.
class BoundedReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  BoundedReader(const unsigned char* data, size_t size) : data_(data), size_(size) {}
  size_t size() const override { return size_; }
  size_t read(uint64_t pos, void* buf, size_t n, const char* = "") const override {
    if (pos > size_ || n > size_ - pos) return 0;
    if (n > 0) std::memcpy(buf, data_ + pos, n);
    return n;
  }

 private:
  const unsigned char* data_;
  size_t size_;
};

// Throws unless tensor `key` of an archive lies inside its storage.
// libtorch 1.13's Unpickler gives a tensor the size, stride and storage
// offset its pickle names without checking them against the storage it
// read, so a changed size made the first read of the payload run past it
// (checkpoint_fuzz's fifth finding; SEGV under ASan). Counts in elements:
// the last element a view reaches must be inside the storage.
void check_inside_storage(const torch::Tensor& t, const std::string& key, const std::string& path) {
  if (!t.defined()) return;
  TORCH_CHECK(t.layout() == torch::kStrided && t.has_storage(), path, ": tensor '", key, "' is a ",
              t.layout(), " tensor; expected dense tensors only (the file is corrupt)");
  const auto refuse = [&](const auto&... why) {
    TORCH_CHECK(false, path, ": tensor '", key, "' (", t.scalar_type(), " of sizes ", t.sizes(),
                ", strides ", t.strides(), ", storage offset ", t.storage_offset(), ") ", why...,
                " (the file is corrupt)");
  };
  if (t.storage_offset() < 0) refuse("has a negative storage offset; expected 0 or more");
  bool empty = false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) < 0 || t.stride(d) < 0) refuse("has a negative size or stride; expected none");
    empty = empty || t.size(d) == 0;
  }
  if (empty) return;  // no element to reach
  const uint64_t capacity = t.storage().nbytes() / uint64_t(t.element_size());
  // The index of the last element reached, summed without overflow: each term
  // is bounded by what the storage has left.
  uint64_t last = uint64_t(t.storage_offset());
  bool inside = last < capacity;
  for (int64_t d = 0; inside && d < t.dim(); ++d) {
    const uint64_t span = uint64_t(t.size(d) - 1), stride = uint64_t(t.stride(d));
    inside = span == 0 || stride <= (capacity - 1 - last) / span;
    if (inside) last += span * stride;
  }
  if (!inside) {
    refuse("reaches past the end of its storage of ", t.storage().nbytes(),
           " bytes; expected a view inside its storage");
  }
}

// Checks every tensor of `value` (an archive's attribute named `key`), into
// nested archives, lists, tuples and dicts. Shared values are checked once,
// so a pickle whose memo makes a container hold itself cannot loop, and the
// depth is bounded, so lists nested a thousand deep cannot overflow the
// stack (a checkpoint nests about five deep).
void check_tensors_inside_storage(const c10::IValue& value, const std::string& key,
                                  const std::string& path, std::unordered_set<const void*>& seen,
                                  int depth = 0) {
  constexpr int kMaxDepth = 64;
  TORCH_CHECK(depth <= kMaxDepth, path, ": '", key, "' nests more than ", kMaxDepth,
              " levels deep; expected a checkpoint's few (the file is corrupt)");
  if (value.isPtrType() && !seen.insert(value.internalToPointer()).second) return;
  if (value.isTensor()) {
    check_inside_storage(value.toTensor(), key, path);
  } else if (value.isObject()) {
    const auto object = value.toObject();
    const size_t named = object->type()->numAttributes();
    for (size_t i = 0; i < object->slots().size(); ++i) {
      const std::string name =
          i < named ? object->type()->getAttributeName(i) : "#" + std::to_string(i);
      check_tensors_inside_storage(object->getSlot(i), key + "/" + name, path, seen, depth + 1);
    }
  } else if (value.isList()) {
    const auto list = value.toListRef();
    for (size_t i = 0; i < list.size(); ++i)
      check_tensors_inside_storage(list[i], key + "[" + std::to_string(i) + "]", path, seen,
                                   depth + 1);
  } else if (value.isTuple()) {
    const auto& elements = value.toTupleRef().elements();
    for (size_t i = 0; i < elements.size(); ++i)
      check_tensors_inside_storage(elements[i], key + "[" + std::to_string(i) + "]", path, seen,
                                   depth + 1);
  } else if (value.isGenericDict()) {
    size_t i = 0;
    for (const auto& entry : value.toGenericDict()) {
      const std::string at = key + "{" + std::to_string(i++) + "}";
      check_tensors_inside_storage(entry.key(), at, path, seen, depth + 1);
      check_tensors_inside_storage(entry.value(), at, path, seen, depth + 1);
    }
  }
}

// Every tensor of `archive` (all of its keys, nested archives included),
// before any is used: the checkpoint's own reads and the optimizer's load()
// take tensors only from archives checked here.
void check_tensors_inside_storage(torch::serialize::InputArchive& archive,
                                  const std::string& path) {
  std::unordered_set<const void*> seen;
  for (const std::string& key : archive.keys()) {
    c10::IValue value;
    if (archive.try_read(key, value)) check_tensors_inside_storage(value, key, path, seen);
  }
}

// The archive of format 1 inside `path`, its checksum verified (format 2).
torch::serialize::InputArchive open_archive(const std::string& path) {
  TORCH_CHECK(fs::is_regular_file(path), path, ": no such file");
  torch::serialize::InputArchive archive;
  try {
    check_torch_archive(std::make_shared<caffe2::serialize::FileAdapter>(path));
    archive.load_from(path);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, path, ": cannot be read (truncated or corrupt?): ", error_text(e));
  }
  check_tensors_inside_storage(archive, path);
  c10::IValue format;
  const bool known = archive.try_read("format", format) && format.isString() &&
                     (format.toStringRef() == kFormat || format.toStringRef() == kFormatUnchecked);
  TORCH_CHECK(known, path, ": is not a lowbit-train checkpoint or model file");
  if (format.toStringRef() == kFormatUnchecked) return archive;
  torch::Tensor payload, checksum;
  TORCH_CHECK(archive.try_read("payload", payload) && archive.try_read("checksum", checksum) &&
                  payload.scalar_type() == torch::kUInt8 && payload.dim() == 1 &&
                  checksum.scalar_type() == torch::kInt64 && checksum.numel() == 1,
              path, ": lacks its payload or checksum (truncated or corrupt?)");
  payload = payload.contiguous();
  const uint64_t stored = static_cast<uint64_t>(checksum.item<int64_t>());
  TORCH_CHECK(checksum64(payload.data_ptr<unsigned char>(), size_t(payload.numel())) == stored,
              path, ": is corrupt: its contents do not match the checksum written with them ",
              "(the file changed on disk after it was saved)");
  torch::serialize::InputArchive inner;
  try {
    const auto bytes = std::make_shared<BoundedReader>(payload.data_ptr<unsigned char>(),
                                                       size_t(payload.numel()));
    check_torch_archive(bytes);
    inner.load_from(
        [&](uint64_t pos, void* buf, size_t n) { return bytes->read(pos, buf, n); },
        [&] { return bytes->size(); });
  } catch (const std::exception& e) {
    TORCH_CHECK(false, path, ": its payload cannot be read: ", error_text(e));
  }
  check_tensors_inside_storage(inner, path);
  return inner;
}

// The optimizer's state as its save() writes it, to put back with put_back.
std::string saved_state(torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive before;
  optimizer.save(before);
  return serialized(before);
}

// Loads `saved` (saved_state) into `optimizer`: into an emptied state map,
// since load() adds and replaces states but removes none.
void put_back(torch::optim::Optimizer& optimizer, const std::string& saved) {
  optimizer.state().clear();
  torch::serialize::InputArchive previous;
  previous.load_from(saved.data(), saved.size());
  optimizer.load(previous);
}

// Loads `archive` into `optimizer`, or throws leaving it as `saved` (its
// saved_state) holds it. libtorch's load() replaces the states one parameter
// group after another, and a lowbit optimizer checks the states it took only
// after replacing them, so a load that throws midway leaves a mix, which
// put_back undoes.
void load_or_keep(torch::optim::Optimizer& optimizer, torch::serialize::InputArchive& archive,
                  const std::string& path, const std::string& saved) {
  std::string why;
  try {
    optimizer.load(archive);
    return;
  } catch (const std::exception& e) {
    // libtorch's and lowbit's load() do not know the file (checkpoint_fuzz's
    // fourth finding: a changed version string failed an assert naming none).
    why = error_text(e);
  }
  try {
    put_back(optimizer, saved);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, path, ": its optimizer state cannot be loaded: ", why,
                "; and putting the optimizer's previous state back failed too: ", error_text(e));
  }
  TORCH_CHECK(false, path, ": its optimizer state cannot be loaded: ", why);
}

}  // namespace

std::string checkpoint_path(const std::string& dir, int64_t step) {
  std::ostringstream name;
  name << "step-" << std::setw(8) << std::setfill('0') << step << ".ckpt";
  return (fs::path(dir) / name.str()).string();
}

void save_checkpoint(const std::string& path, torch::nn::Module& model,
                     torch::optim::Optimizer& optimizer, const TrainerState& state) {
  torch::serialize::OutputArchive optimizer_state;
  optimizer.save(optimizer_state);
  save_checkpoint(path, model, optimizer_state, state);
}

void save_checkpoint(const std::string& path, torch::nn::Module& model,
                     torch::serialize::OutputArchive& optimizer_state,
                     const TrainerState& state) {
  torch::serialize::OutputArchive archive, trainer;
  write_model(archive, model);
  archive.write("optimizer", optimizer_state);
  trainer.write("step", torch::tensor(state.step, torch::kInt64));
  trainer.write("micro_batch", torch::tensor(state.micro_batch, torch::kInt64));
  trainer.write("rng_state", state.rng_state);
  trainer.write("recipe", c10::IValue(state.recipe_yaml));
  if (state.cuda_rng_state.defined()) trainer.write("cuda_rng_state", state.cuda_rng_state);
  archive.write("trainer", trainer);
  quant::write_file_atomically(path, sealed(archive));
}

Checkpoint::Checkpoint(const std::string& path)
    : path_(path), archive_(std::make_unique<torch::serialize::InputArchive>(open_archive(path))) {
  torch::serialize::InputArchive trainer;
  TORCH_CHECK(archive_->try_read("trainer", trainer), path, ": is a model file, not a checkpoint");
  state_.step = read_int(trainer, "step", path);
  state_.micro_batch = read_int(trainer, "micro_batch", path);
  TORCH_CHECK(trainer.try_read("rng_state", state_.rng_state), path, ": lacks the RNG state");
  c10::IValue recipe;
  TORCH_CHECK(trainer.try_read("recipe", recipe) && recipe.isString(), path, ": lacks its recipe");
  state_.recipe_yaml = recipe.toStringRef();
  trainer.try_read("cuda_rng_state", state_.cuda_rng_state);  // only a CUDA run writes it
}

void Checkpoint::restore(torch::nn::Module& model, torch::optim::Optimizer& optimizer) {
  torch::serialize::InputArchive weights, optimizer_archive;
  TORCH_CHECK(
      archive_->try_read("model", weights) && archive_->try_read("optimizer", optimizer_archive),
      path_, ": lacks the model or optimizer section");
  // Everything that can refuse the file comes before the weights change:
  // their checks, then the optimizer's load(), which leaves the optimizer as
  // it was when it throws. The copies come last, all or nothing; when they
  // fail (the device does), the optimizer's previous state is put back too.
  const WeightCopies copies = checked_weights(weights, model, path_);
  const std::string saved = saved_state(optimizer);
  load_or_keep(optimizer, optimizer_archive, path_, saved);
  try {
    copy_weights(copies);
  } catch (const std::exception& e) {
    const std::string why = error_text(e);
    try {
      put_back(optimizer, saved);
    } catch (const std::exception& again) {
      TORCH_CHECK(false, path_, ": ", why, "; the model is as it was, but putting the ",
                  "optimizer's previous state back failed: ", error_text(again));
    }
    TORCH_CHECK(false, path_, ": ", why, "; the model and the optimizer are as they were");
  }
}

void Checkpoint::restore_model(torch::nn::Module& model) {
  torch::serialize::InputArchive weights;
  TORCH_CHECK(archive_->try_read("model", weights), path_, ": lacks the model section");
  copy_weights(checked_weights(weights, model, path_), path_);
}

void Checkpoint::load_optimizer(const std::function<void(torch::serialize::InputArchive&)>& load) {
  torch::serialize::InputArchive optimizer_archive;
  TORCH_CHECK(archive_->try_read("optimizer", optimizer_archive), path_,
              ": lacks the optimizer section");
  // libtorch's and lowbit's load() do not know the file (checkpoint_fuzz's
  // fourth finding: a changed version string failed an assert naming none).
  try {
    load(optimizer_archive);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, path_, ": its optimizer state cannot be loaded: ", error_text(e));
  }
}

std::vector<int64_t> list_checkpoints(const std::string& dir) {
  std::vector<int64_t> steps;
  if (!fs::is_directory(dir)) return steps;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && std::regex_match(name, m, kCheckpointName)) {
      steps.push_back(std::stoll(m[1].str()));
    }
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  const std::vector<int64_t> steps = list_checkpoints(dir);
  for (size_t i = 0; i + size_t(keep) < steps.size(); ++i) {
    fs::remove(checkpoint_path(dir, steps[i]));
  }
}

int remove_stale_temp_files(const std::string& dir) {
  static const std::regex temp(R"((step-\d{8,}\.ckpt|model\.pt)\.tmp\.\d+)");
  int removed = 0;
  if (!fs::is_directory(dir)) return removed;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (std::regex_match(entry.path().filename().string(), temp)) {
      fs::remove(entry.path());
      ++removed;
    }
  }
  return removed;
}

void save_model(const std::string& path, torch::nn::Module& model) {
  torch::serialize::OutputArchive archive;
  write_model(archive, model);
  quant::write_file_atomically(path, sealed(archive));
}

void load_model(const std::string& path, torch::nn::Module& model) {
  torch::serialize::InputArchive archive = open_archive(path), weights;
  TORCH_CHECK(archive.try_read("model", weights), path, ": lacks the model section");
  copy_weights(checked_weights(weights, model, path), path);
}

}  // namespace lowbit::train
