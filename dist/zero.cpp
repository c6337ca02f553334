#include "dist/zero.h"

#include <torch/torch.h>

#include <algorithm>
#include <exception>
#include <sstream>
#include <stdexcept>

#include "kernels/error.h"
#include "optim/lamb8bit.h"
#include "quant/atomic_file.h"

namespace lowbit::dist {
namespace {

using optim::QuantizedParamState;

// Collective: returns when no rank failed, else throws on every rank: a rank's own `error`, or,
// where this rank did not fail, the ranks that did (their messages are on their own stderr).
void agree(Group& group, const std::string& what, const std::string& error) {
  torch::Tensor failed = torch::zeros({group.size()}, torch::kFloat64);
  failed[group.rank()] = error.empty() ? 0.0 : 1.0;
  std::vector<torch::Tensor> tensors{failed};
  group.all_reduce_sum(tensors);
  if (failed.sum().item<double>() == 0) return;
  if (!error.empty()) throw std::runtime_error(error);
  std::string ranks;
  for (int r = 0; r < group.size(); ++r)
    if (failed[r].item<double>() != 0) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  throw std::runtime_error("dist: ZeroOptimizer: " + what + " failed on rank(s) " + ranks +
                           " (see their errors); rank " + std::to_string(group.rank()) +
                           " stops too");
}

// The names of an options archive: what tells one optimizer's state dict from another's.
std::vector<std::string> sorted_keys(torch::serialize::InputArchive& archive) {
  std::vector<std::string> keys = archive.keys();
  std::sort(keys.begin(), keys.end());
  return keys;
}

std::vector<std::string> option_names(const torch::optim::OptimizerOptions& options) {
  torch::serialize::OutputArchive out;
  options.serialize(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  std::istringstream in_bytes(bytes.str());
  torch::serialize::InputArchive in;
  in.load_from(in_bytes);
  return sorted_keys(in);
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return "{" + s + "}";
}

int64_t read_size(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor size;
  archive.read(key, size);
  return size.item<int64_t>();
}

// The states of a single-process state dict's parameter group 0, by position (nullptr where a
// parameter has none).
std::vector<std::unique_ptr<QuantizedParamState>> states_by_position(
    torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive groups, group, states;
  archive.read("param_groups", groups);
  groups.read("param_groups/0", group);
  archive.read("state", states);
  std::vector<std::unique_ptr<QuantizedParamState>> out(size_t(read_size(group, "params/size")));
  for (size_t j = 0; j < out.size(); ++j) {
    c10::IValue key;
    group.read("params/" + std::to_string(j), key);
    torch::serialize::InputArchive state;
    if (!states.try_read(key.toStringRef(), state)) continue;
    out[j] = std::make_unique<QuantizedParamState>();
    out[j]->serialize(state);
  }
  return out;
}

}  // namespace

// The whole tensors' sums for the rank's optimizer: see sum_over_ranks.
class ZeroOptimizer::Sums : public optim::WholeTensorSums {
 public:
  explicit Sums(ZeroOptimizer& zero) : zero_(zero) {}
  void gradient(const std::vector<torch::Tensor>& parts, std::vector<double>& grad_sq) override {
    zero_.sum_over_ranks(zero_.gradient_sums_, "gradient norm (percentile_clipping)", parts,
                         {&grad_sq});
  }
  void update(const std::vector<torch::Tensor>& parts, std::vector<double>& update_sq,
              std::vector<double>& param_sq) override {
    zero_.sum_over_ranks(zero_.update_sums_, "update norm (LAMB, max_unorm)", parts,
                         {&update_sq, &param_sq});
  }

 private:
  ZeroOptimizer& zero_;
};

ZeroOptimizer::ZeroOptimizer(Group& group, std::vector<torch::Tensor> params, const Factory& make,
                             int64_t block_size, int64_t min_8bit_size)
    : group_(group), params_(std::move(params)), make_(make), block_size_(block_size) {
  LOWBIT_CHECK(block_size > 0 && min_8bit_size >= 0, "dist: ZeroOptimizer: block_size ",
               block_size, " must be positive and min_8bit_size ", min_8bit_size,
               " not negative");
  LOWBIT_CHECK(!params_.empty(), "dist: ZeroOptimizer: no parameters");
  LOWBIT_CHECK(make_, "dist: ZeroOptimizer: no optimizer factory");
  // The blocks of all parameters in order, each weighted by its state bytes per element (one
  // for 8-bit states, four for 32-bit ones, whose tensors are below min_8bit_size), so that
  // every rank holds about the same state memory: rank r owns the contiguous blocks whose
  // weighted start lies in [W r / N, W (r + 1) / N).
  std::vector<int64_t> first_block{0}, first_cost{0}, unit;
  for (size_t k = 0; k < params_.size(); ++k) {
    const auto& p = params_[k];
    LOWBIT_CHECK(p.is_contiguous() && p.device() == params_[0].device() &&
                     p.scalar_type() == params_[0].scalar_type(),
                 "dist: ZeroOptimizer: parameter ", k, " (", p.scalar_type(), " on ",
                 p.device().str(), ") must be contiguous, and of the first parameter's dtype and "
                 "device (", params_[0].scalar_type(), " on ", params_[0].device().str(), ")");
    unit.push_back(p.numel() >= min_8bit_size ? 1 : 4);
    first_block.push_back(first_block.back() + (p.numel() + block_size - 1) / block_size);
    first_cost.push_back(first_cost.back() + p.numel() * unit.back());
  }
  const int64_t total = first_block.back(), weight = first_cost.back(), ranks = group_.size();
  // The first block whose weighted start s satisfies s N >= W r.
  const auto boundary = [&](int64_t r) {
    for (size_t k = 0; k < params_.size(); ++k) {
      if (first_cost[k] * ranks >= weight * r) return first_block[k];
      if (first_cost[k + 1] * ranks > weight * r) {
        const int64_t step = block_size * unit[k] * ranks;
        const int64_t j = (weight * r - first_cost[k] * ranks + step - 1) / step;
        return std::min(first_block[k] + j, first_block[k + 1]);
      }
    }
    return total;
  };
  shards_.resize(size_t(ranks));
  for (int64_t r = 0; r < ranks; ++r) {
    const int64_t lo = boundary(r), hi = r + 1 == ranks ? total : boundary(r + 1);
    for (size_t k = 0; k < params_.size(); ++k) {
      const int64_t b0 = std::max(lo, first_block[k]), b1 = std::min(hi, first_block[k + 1]);
      if (b0 >= b1) continue;
      const int64_t begin = (b0 - first_block[k]) * block_size;
      const int64_t end = std::min((b1 - first_block[k]) * block_size, params_[k].numel());
      Shard s{k, begin, end - begin, {}};
      if (r == group_.rank()) {
        s.view = params_[k].detach().view({-1}).narrow(0, begin, end - begin);
        s.view.set_requires_grad(true);
        param_of_[s.view.unsafeGetTensorImpl()] = k;
      }
      shards_[size_t(r)].push_back(std::move(s));
    }
  }
  sums_ = std::make_shared<Sums>(*this);
  // Built and checked here; then every rank learns whether all succeeded and what the step
  // sums across ranks, so that a rank's error or a different recipe stops every rank.
  std::string error;
  bool gradient_sums = false, update_sums = false;
  try {
    std::vector<torch::Tensor> mine;
    for (const Shard& s : shards_[size_t(group_.rank())]) mine.push_back(s.view);
    if (!mine.empty()) {  // more ranks than blocks leaves a rank without any
      optimizer_ = make_(mine);
      LOWBIT_CHECK(optimizer_, "dist: ZeroOptimizer: the factory returned no optimizer");
      LOWBIT_CHECK(optimizer_->param_groups().size() == 1,
                   "dist: ZeroOptimizer: one parameter group only");
      const optim::StateSettings& settings = optimizer_->group_settings(0);
      LOWBIT_CHECK(settings.block_size == block_size && settings.min_8bit_size == min_8bit_size,
                   "dist: ZeroOptimizer: the optimizer's block_size ", settings.block_size,
                   " and min_8bit_size ", settings.min_8bit_size,
                   " must be the ones given here (", block_size, ", ", min_8bit_size, ")");
      gradient_sums = settings.percentile_clipping < 100;
      update_sums = settings.max_unorm > 0 || dynamic_cast<optim::LAMB8bit*>(optimizer_.get());
      // 8-bit or not by the whole tensor's size, as without sharding.
      for (const Shard& s : shards_[size_t(group_.rank())]) {
        optim::ParamOverride o;
        if (settings.quantizes(params_[s.param].numel()))
          o.min_8bit_size = 0;
        else
          o.optim_bits = 32;
        optimizer_->override_config(s.view, o);
      }
      optimizer_->set_whole_tensor_sums(sums_);
    }
  } catch (const std::exception& e) {
    error = message_of(e);
  }
  agree(group_, "building the optimizer", error);
  torch::Tensor votes = torch::tensor(
      {optimizer_ ? 1.0 : 0.0, gradient_sums ? 1.0 : 0.0, update_sums ? 1.0 : 0.0},
      torch::kFloat64);
  std::vector<torch::Tensor> tensors{votes};
  group_.all_reduce_sum(tensors);
  const int64_t built = votes[0].item<int64_t>(), gradient = votes[1].item<int64_t>(),
                update = votes[2].item<int64_t>();
  LOWBIT_CHECK((gradient == 0 || gradient == built) && (update == 0 || update == built),
               "dist: ZeroOptimizer: the ranks built different optimizers: ", gradient, " of ",
               built, " use percentile_clipping and ", update, " of ", built,
               " need update norms (LAMB8bit or max_unorm); every rank must build the same one");
  gradient_sums_ = gradient > 0;
  update_sums_ = update > 0;
}

ZeroOptimizer::~ZeroOptimizer() = default;

int64_t ZeroOptimizer::owned_elements() const {
  int64_t n = 0;
  for (const Shard& s : shards_[size_t(group_.rank())]) n += s.size;
  return n;
}

void ZeroOptimizer::zero_grad() {
  for (auto& p : params_) p.mutable_grad() = torch::Tensor();
  for (auto& s : shards_[size_t(group_.rank())]) s.view.mutable_grad() = torch::Tensor();
}

void ZeroOptimizer::sum_over_ranks(bool needed, const char* what,
                                   const std::vector<torch::Tensor>& parts,
                                   const std::vector<std::vector<double>*>& columns) {
  LOWBIT_CHECK(needed || parts.empty(), "dist: ZeroOptimizer: the step asks for the ", what,
               " across ranks, which the optimizer did not need when the ZeroOptimizer was "
               "built; set percentile_clipping and max_unorm before building it, the same on "
               "every rank");
  if (!needed) return;
  // Each parameter's column holds the sum over this rank's part of it (zero where it owns
  // none); the all-reduce adds the ranks' parts, with the same bits on every rank.
  torch::Tensor sums =
      torch::zeros({int64_t(columns.size()), int64_t(params_.size())}, torch::kFloat64);
  auto at = sums.accessor<double, 2>();
  std::vector<size_t> index;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto it = param_of_.find(parts[i].unsafeGetTensorImpl());
    LOWBIT_CHECK(it != param_of_.end(), "dist: ZeroOptimizer: the optimizer steps a tensor ",
                 "that is not one of this rank's shards");
    index.push_back(it->second);
    for (size_t c = 0; c < columns.size(); ++c)
      at[int64_t(c)][int64_t(it->second)] = (*columns[c])[i];
  }
  std::vector<torch::Tensor> tensors{sums};
  group_.all_reduce_sum(tensors);
  for (size_t i = 0; i < parts.size(); ++i)
    for (size_t c = 0; c < columns.size(); ++c)
      (*columns[c])[i] = at[int64_t(c)][int64_t(index[i])];
}

void ZeroOptimizer::step() {
  torch::NoGradGuard no_grad;
  // One read back for all gradients (on a GPU, one synchronisation per step).
  std::vector<torch::Tensor> finite;
  for (const auto& p : params_)
    if (p.grad().defined()) finite.push_back(torch::isfinite(p.grad()).all());
  if (!finite.empty() && !torch::stack(finite).all().item<bool>()) {
    ++skipped_;
    return;
  }
  if (optimizer_) {
    for (Shard& s : shards_[size_t(group_.rank())]) {
      const auto& g = params_[s.param].grad();
      s.view.mutable_grad() =
          g.defined() ? g.reshape({-1}).narrow(0, s.begin, s.size) : torch::Tensor();
    }
    optimizer_->step();
  } else {
    // No shards here, but the other ranks' steps sum across ranks.
    std::vector<double> none;
    sums_->gradient({}, none);
    sums_->update({}, none, none);
  }
  // Each rank's shards, concatenated, from their owner to everyone.
  const auto dtype = params_[0].scalar_type();
  for (int r = 0; r < group_.size(); ++r) {
    const auto& shards = shards_[size_t(r)];
    int64_t size = 0;
    for (const Shard& s : shards) size += s.size;
    if (size == 0) continue;
    torch::Tensor buffer;
    if (r == group_.rank()) {
      std::vector<torch::Tensor> views;
      for (const Shard& s : shards) views.push_back(s.view.detach());
      buffer = torch::cat(views);
    } else {
      buffer = torch::empty({size}, torch::TensorOptions().dtype(dtype).device(
                                        params_[0].device()));
    }
    group_.broadcast(buffer, r);
    if (r == group_.rank()) continue;
    int64_t offset = 0;
    for (const Shard& s : shards) {
      params_[s.param].detach().view({-1}).narrow(0, s.begin, s.size).copy_(
          buffer.narrow(0, offset, s.size));
      offset += s.size;
    }
  }
}

std::vector<std::vector<std::unique_ptr<QuantizedParamState>>> ZeroOptimizer::gather_states(
    int64_t& skipped_blocks) const {
  skipped_blocks = optimizer_ ? optimizer_->nonfinite_stats().skipped_blocks : 0;
  std::vector<std::vector<std::unique_ptr<QuantizedParamState>>> states(shards_.size());
  if (group_.rank() != 0) {
    // This rank's state dict, as bytes: its length, then the bytes.
    std::ostringstream bytes;
    if (optimizer_) {
      torch::serialize::OutputArchive archive;
      optimizer_->save(archive);
      archive.save_to(bytes);
    }
    const std::string data = bytes.str();
    group_.send(torch::tensor({int64_t(data.size())}, torch::kInt64), 0);
    if (!data.empty())
      group_.send(torch::from_blob(const_cast<char*>(data.data()), {int64_t(data.size())},
                                   torch::kUInt8),
                  0);
    return states;
  }
  LOWBIT_CHECK(optimizer_, "dist: ZeroOptimizer: rank 0 owns no blocks");
  optimizer_->sync_state();
  for (size_t j = 0; j < shards_[0].size(); ++j) {
    const QuantizedParamState* s = optimizer_->param_state(0, j);
    states[0].push_back(s ? std::make_unique<QuantizedParamState>(*s) : nullptr);
  }
  for (int r = 1; r < group_.size(); ++r) {
    torch::Tensor size = torch::zeros({1}, torch::kInt64);
    group_.recv(size, r);
    if (size.item<int64_t>() == 0) continue;  // a rank without shards
    torch::Tensor data = torch::empty({size.item<int64_t>()}, torch::kUInt8);
    group_.recv(data, r);
    // On the CPU: a rank's GPU need not be visible here; save() moves the parts back.
    torch::serialize::InputArchive archive;
    archive.load_from(reinterpret_cast<const char*>(data.data_ptr<uint8_t>()),
                      size_t(data.numel()), torch::Device(torch::kCPU));
    states[size_t(r)] = states_by_position(archive);
    LOWBIT_CHECK(states[size_t(r)].size() == shards_[size_t(r)].size(), "dist: ZeroOptimizer: ",
                 "rank ", r, " sent the states of ", states[size_t(r)].size(),
                 " tensors; it owns ", shards_[size_t(r)].size(), " shards");
    c10::IValue blocks;
    if (archive.try_read("lowbit/skipped_blocks", blocks)) skipped_blocks += blocks.toInt();
  }
  return states;
}

void ZeroOptimizer::save(torch::serialize::OutputArchive& archive) const {
  int64_t skipped_blocks = 0;
  auto states = gather_states(skipped_blocks);
  if (group_.rank() != 0) return;
  // A whole tensor's state is its shards' states joined in rank order: the shards are
  // consecutive runs of its blocks, so the codes, absmax and float states concatenate.
  std::vector<std::vector<const QuantizedParamState*>> parts(params_.size());
  std::vector<std::vector<int>> owners(params_.size());
  for (size_t r = 0; r < shards_.size(); ++r)
    for (size_t j = 0; j < shards_[r].size(); ++j) {
      const size_t k = shards_[r][j].param;
      parts[k].push_back(j < states[r].size() ? states[r][j].get() : nullptr);
      owners[k].push_back(int(r));
    }
  std::unique_ptr<optim::Optimizer8bit> whole = make_(params_);
  LOWBIT_CHECK(whole, "dist: ZeroOptimizer: the factory returned no optimizer");
  whole->param_groups().at(0).set_options(optimizer_->param_groups()[0].options().clone());
  for (size_t k = 0; k < params_.size(); ++k) {
    const auto& pieces = parts[k];
    const size_t present = size_t(std::count_if(pieces.begin(), pieces.end(),
                                                [](const auto* s) { return s != nullptr; }));
    if (present == 0) continue;  // not stepped yet
    const auto where = [&](size_t i) {
      return "parameter " + std::to_string(k) + " (its part on rank " +
             std::to_string(owners[k][i]) + ")";
    };
    LOWBIT_CHECK(present == pieces.size(), "dist: ZeroOptimizer: save: some ranks hold a state ",
                 "for parameter ", k, " and some do not");
    const QuantizedParamState& first = *pieces[0];
    const auto join = [&](auto field) {
      std::vector<torch::Tensor> ts;
      for (size_t i = 0; i < pieces.size(); ++i) {
        const torch::Tensor t = field(*pieces[i]);
        LOWBIT_CHECK(t.defined() == field(first).defined(), "dist: ZeroOptimizer: save: ",
                     where(i), " has a different set of state tensors than rank ", owners[k][0]);
        if (t.defined()) ts.push_back(t.reshape({-1}).to(params_[k].device()));
      }
      return ts.empty() ? torch::Tensor() : torch::cat(ts);
    };
    auto state = std::make_unique<QuantizedParamState>();
    for (size_t i = 0; i < pieces.size(); ++i) {
      LOWBIT_CHECK(pieces[i]->step() == first.step(), "dist: ZeroOptimizer: save: ", where(i),
                   " is at step ", pieces[i]->step(), " but rank ", owners[k][0], "'s at ",
                   first.step());
      // Every part received the same whole-tensor gradient norms.
      LOWBIT_CHECK(pieces[i]->gnorm_vec().defined() == first.gnorm_vec().defined() &&
                       (!first.gnorm_vec().defined() ||
                        torch::equal(pieces[i]->gnorm_vec().to(first.gnorm_vec().device()),
                                     first.gnorm_vec())),
                   "dist: ZeroOptimizer: save: ", where(i),
                   " has another gradient-norm history than rank ", owners[k][0], "'s part");
    }
    state->step(first.step());
    const auto values = [&](torch::Tensor t) {
      return t.defined() ? t.view(params_[k].sizes()) : t;
    };
    state->state1(values(join([](const QuantizedParamState& s) { return s.state1(); })));
    state->state2(values(join([](const QuantizedParamState& s) { return s.state2(); })));
    state->absmax1(join([](const QuantizedParamState& s) { return s.absmax1(); }));
    state->absmax2(join([](const QuantizedParamState& s) { return s.absmax2(); }));
    if (first.gnorm_vec().defined()) state->gnorm_vec(first.gnorm_vec().clone());
    whole->set_param_state(0, k, std::move(state));
  }
  whole->set_nonfinite_stats({skipped_, skipped_blocks});
  whole->save(archive);
}

void ZeroOptimizer::save(const std::string& path) const {
  std::string error;
  try {
    torch::serialize::OutputArchive archive;
    save(archive);
    if (group_.rank() == 0) {
      // Serialized first, written after: libtorch's streaming writer calls back again from its
      // destructor, so an error thrown through it would end the process.
      std::ostringstream bytes;
      archive.save_to(bytes);
      quant::write_file_atomically(path, bytes.str());
    }
  } catch (const std::exception& e) {
    error = "dist: ZeroOptimizer: saving " + path + ": " + message_of(e);
  }
  agree(group_, "saving " + path, error);
}

void ZeroOptimizer::install(torch::serialize::InputArchive& archive) {
  // The layout first, for messages that say what differs before libtorch's own checks.
  torch::serialize::InputArchive groups, group, options;
  archive.read("param_groups", groups);
  const int64_t group_count = read_size(groups, "param_groups/size");
  TORCH_CHECK(group_count == 1, "the state dict has ", group_count,
              " parameter groups; a ZeroOptimizer has one");
  groups.read("param_groups/0", group);
  const int64_t count = read_size(group, "params/size");
  TORCH_CHECK(count == int64_t(params_.size()), "the state dict holds ", count,
              " parameters; this model has ", params_.size(), " (it was saved for another model)");
  group.read("options", options);
  std::unique_ptr<optim::Optimizer8bit> whole = make_(params_);
  TORCH_CHECK(whole, "the factory returned no optimizer");
  const auto saved = sorted_keys(options);
  const auto expected = option_names(whole->param_groups().at(0).options());
  TORCH_CHECK(saved == expected, "the state dict's optimizer options are ", joined(saved),
              " but this optimizer's are ", joined(expected),
              " (it was saved by another optimizer)");
  // The single-process load checks every state against its whole parameter; the state
  // layout and the sums a step takes across ranks must stay those the shards were cut for.
  const optim::StateSettings built = whole->group_settings(0);
  whole->load(archive);
  const optim::StateSettings& loaded = whole->group_settings(0);
  TORCH_CHECK(loaded == built, "the state dict was saved with optim_bits ", loaded.optim_bits,
              ", min_8bit_size ", loaded.min_8bit_size, ", block_size ", loaded.block_size,
              ", percentile_clipping ", loaded.percentile_clipping, " and max_unorm ",
              loaded.max_unorm, "; this optimizer has ", built.optim_bits, ", ",
              built.min_8bit_size, ", ", built.block_size, ", ", built.percentile_clipping,
              " and ", built.max_unorm);
  if (optimizer_) {
    optimizer_->param_groups()[0].set_options(whole->param_groups().at(0).options().clone());
    const auto& mine = shards_[size_t(group_.rank())];
    for (size_t j = 0; j < mine.size(); ++j) {
      const Shard& s = mine[j];
      const QuantizedParamState* w = whole->param_state(0, s.param);
      if (!w) continue;
      const auto values = [&](const torch::Tensor& t) {
        return t.defined() ? t.reshape({-1}).narrow(0, s.begin, s.size).clone() : t;
      };
      const auto absmax = [&](const torch::Tensor& t) {
        return t.defined() ? t.narrow(0, s.begin / block_size_,
                                      (s.size + block_size_ - 1) / block_size_)
                                 .clone()
                           : t;
      };
      auto part = std::make_unique<QuantizedParamState>();
      part->step(w->step());
      part->state1(values(w->state1()));
      part->state2(values(w->state2()));
      part->absmax1(absmax(w->absmax1()));
      part->absmax2(absmax(w->absmax2()));
      if (w->gnorm_vec().defined()) part->gnorm_vec(w->gnorm_vec().clone());
      optimizer_->set_param_state(0, j, std::move(part));
    }
  }
  // ZeroOptimizer counts the skipped steps (its ranks' optimizers never see a non-finite
  // gradient); the skipped blocks stay with rank 0, so that a save sums them back.
  const optim::NonFiniteStats stats = whole->nonfinite_stats();
  skipped_ = stats.skipped_steps;
  if (optimizer_)
    optimizer_->set_nonfinite_stats({0, group_.rank() == 0 ? stats.skipped_blocks : 0});
}

void ZeroOptimizer::load(torch::serialize::InputArchive& archive) {
  std::string error;
  try {
    install(archive);
  } catch (const std::exception& e) {
    error = "dist: ZeroOptimizer: load: " + message_of(e);
  }
  agree(group_, "load", error);
}

void ZeroOptimizer::load(const std::string& path) {
  std::string error;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    install(archive);
  } catch (const std::exception& e) {
    error = "dist: ZeroOptimizer: loading " + path + ": " + message_of(e);
  }
  agree(group_, "loading " + path, error);
}

}  // namespace lowbit::dist
