#include "examples/train/task.h"

#include <algorithm>
#include <sstream>

#include <torch/nn/modules/container/any.h>
#include <torch/serialize.h>

#include "examples/data/idx.h"
#include "examples/data/image_batches.h"
#include "examples/data/text_corpus.h"
#include "examples/train/causal_lm_task.h"
#include "examples/train/eval_scope.h"
#include "examples/train/model_factory.h"

namespace lowbit::train {
namespace {

// Rows [begin, end) of a batch of n for `shard`, and the weight of their mean
// loss: rows · ranks / n, so that the mean over the ranks of the weighted
// shard losses is the batch's mean loss (1 for a process alone).
struct ShardRows {
  int64_t begin, end;
  double weight;
};
ShardRows shard_rows(const DataShard& shard, int64_t n) {
  const int64_t begin = shard.begin(n), end = shard.end(n);
  return {begin, end, double(end - begin) * double(shard.ranks) / double(n)};
}

class ImageTask : public Task {
 public:
  ImageTask(const config::Recipe& r, torch::Device device, DataShard shard)
      : model_(build_model(r.model)),
        device_(device),
        shard_(shard),
        batch_size_(r.train.batch_size),
        batches_(normalised_train(r), r.train.batch_size, uint64_t(r.train.seed)) {
    model_.ptr()->to(device_);
    test_ = data::load_fashion_mnist(r.data.path, "t10k", r.data.eval_limit);
    test_.images.sub_(mean_).div_(std_);
    test_.images = test_.images.to(device_);
    test_.labels = test_.labels.to(device_);
  }

  std::shared_ptr<torch::nn::Module> module() const override { return model_.ptr(); }
  int64_t batches_per_epoch() const override { return batches_.batches_per_epoch(); }

  torch::Tensor loss(int64_t index) override {
    const auto [images, labels] = batches_.batch(index);
    const ShardRows rows = shard_rows(shard_, images.size(0));
    if (rows.begin == rows.end) return {};
    const torch::Tensor loss =
        torch::cross_entropy_loss(model_.forward(images.slice(0, rows.begin, rows.end).to(device_)),
                                  labels.slice(0, rows.begin, rows.end).to(device_));
    return shard_.ranks == 1 ? loss : loss * rows.weight;
  }

  Evaluation evaluate() override {
    EvalScope scope(*model_.ptr());
    const int64_t n = test_.images.size(0);
    double loss_sum = 0.0;
    int64_t correct = 0;
    for (int64_t begin = 0; begin < n; begin += batch_size_) {
      const int64_t end = std::min(n, begin + batch_size_);
      const torch::Tensor logits = model_.forward(test_.images.slice(0, begin, end));
      const torch::Tensor labels = test_.labels.slice(0, begin, end);
      loss_sum += torch::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum).item<double>();
      correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
    }
    return {loss_sum / double(n), double(correct) / double(n), std::nullopt};
  }

  std::string describe() const override {
    std::ostringstream os;
    os << "Fashion-MNIST: " << train_count_ << " training images (" << batches_per_epoch()
       << " batches per epoch), " << test_.images.size(0) << " test images";
    return os.str();
  }

 private:
  // Standardised with the training images' own mean and deviation.
  data::ImageSet normalised_train(const config::Recipe& r) {
    data::ImageSet train = data::load_fashion_mnist(r.data.path, "train", r.data.train_limit);
    mean_ = train.images.mean().item<float>();
    std_ = train.images.std().item<float>();
    train.images.sub_(mean_).div_(std_);
    train_count_ = train.images.size(0);
    return train;
  }

  torch::nn::AnyModule model_;
  torch::Device device_;
  DataShard shard_;
  int64_t batch_size_;
  float mean_ = 0.0f, std_ = 1.0f;
  int64_t train_count_ = 0;
  data::ImageBatches batches_;
  data::ImageSet test_;
};

class TextTask : public Task {
 public:
  TextTask(const config::Recipe& r, torch::Device device, DataShard shard)
      : model_(build_model(r.model)),
        device_(device),
        shard_(shard),
        batch_size_(r.train.batch_size),
        block_(r.model.block_size),
        seed_(uint64_t(r.train.seed)) {
    model_.ptr()->to(device_);
    std::vector<std::string> documents = r.data.name == "kjv"
                                             ? data::read_kjv(r.data.path)
                                             : data::read_fortunes(r.data.path, r.data.files);
    if (r.data.train_limit > 0 && r.data.train_limit < int64_t(documents.size())) {
      documents.resize(size_t(r.data.train_limit));
    }
    documents_ = int64_t(documents.size());
    name_ = r.data.name == "kjv" ? "KJV" : "fortunes";
    text_ = data::split_documents(documents, r.data.valid_fraction);
    TORCH_CHECK(text_.valid.numel() > block_, "data: the validation text holds ",
                text_.valid.numel(), " characters, too few for one window of model.block_size ",
                block_, " + 1; raise data.train_limit or data.valid_fraction");
    const int64_t all = (text_.valid.numel() - 1) / block_;
    valid_ = data::evaluation_windows(
        text_.valid, block_, r.data.eval_limit > 0 ? std::min(r.data.eval_limit, all) : all);
    valid_.input = valid_.input.to(device_);
    valid_.target = valid_.target.to(device_);
    per_epoch_ = std::max<int64_t>(1, text_.train.numel() / (batch_size_ * block_));
  }

  std::shared_ptr<torch::nn::Module> module() const override { return model_.ptr(); }
  int64_t batches_per_epoch() const override { return per_epoch_; }

  torch::Tensor loss(int64_t index) override {
    const data::TextBatch b = data::sample_windows(text_.train, batch_size_, block_, seed_, index);
    const ShardRows rows = shard_rows(shard_, b.input.size(0));
    if (rows.begin == rows.end) return {};
    const torch::Tensor loss = lm_loss(b.input.slice(0, rows.begin, rows.end).to(device_),
                                       b.target.slice(0, rows.begin, rows.end).to(device_));
    return shard_.ranks == 1 ? loss : loss * rows.weight;
  }

  Evaluation evaluate() override {
    EvalScope scope(*model_.ptr());
    const int64_t n = valid_.input.size(0);
    double loss_sum = 0.0;
    for (int64_t begin = 0; begin < n; begin += batch_size_) {
      const int64_t end = std::min(n, begin + batch_size_);
      loss_sum += lm_loss(valid_.input.slice(0, begin, end), valid_.target.slice(0, begin, end))
                      .item<double>() *
                  double(end - begin);
    }
    return {loss_sum / double(n), std::nullopt, std::nullopt};
  }

  std::string describe() const override {
    std::ostringstream os;
    os << name_ << ": " << documents_ << " documents, " << text_.train.numel()
       << " training characters (" << per_epoch_ << " batches per epoch), " << valid_.input.size(0)
       << " validation windows of " << block_;
    return os.str();
  }

 private:
  torch::Tensor lm_loss(const torch::Tensor& input, const torch::Tensor& target) {
    return torch::cross_entropy_loss(model_.forward(input).flatten(0, 1), target.flatten());
  }

  torch::nn::AnyModule model_;
  torch::Device device_;
  DataShard shard_;
  int64_t batch_size_, block_;
  uint64_t seed_;
  int64_t documents_ = 0, per_epoch_ = 1;
  std::string name_;
  data::TextSplit text_;
  data::TextBatch valid_;
};

}  // namespace

void Task::save_hf(const std::string& dir) {
  throw config::RecipeError("cannot write '" + dir +
                            "' in Hugging Face layout: only the language models "
                            "(model.name hf_causal_lm or llama) can be");
}

std::unique_ptr<Task> make_task(const config::Recipe& recipe, torch::Device device,
                                DataShard shard) {
  torch::manual_seed(uint64_t(recipe.train.seed));
  if (recipe.model.name == "hf_causal_lm" || recipe.model.name == "llama") {
#ifdef LOWBIT_WITH_TEXT
    return make_causal_lm_task(recipe, device, shard);
#else
    throw config::RecipeError("model.name: " + recipe.model.name +
                              " needs the tokenizers, and this build has none (ICU was not "
                              "found: install libicu-dev and rebuild)");
#endif
  }
  if (recipe.data.name == "fashion_mnist")
    return std::make_unique<ImageTask>(recipe, device, shard);
  return std::make_unique<TextTask>(recipe, device, shard);
}

}  // namespace lowbit::train
