#include "examples/train/model_factory.h"

#include "examples/data/text_corpus.h"
#include "examples/models/char_gpt.h"
#include "examples/models/cnn.h"
#include "examples/models/mlp.h"

namespace lowbit::train {

torch::nn::AnyModule build_model(const config::ModelRecipe& m) {
  // Fashion-MNIST: 28x28 grey images, 10 classes.
  constexpr int64_t kPixels = 28 * 28, kClasses = 10;
  if (m.name == "mlp") {
    return torch::nn::AnyModule(models::MlpClassifier(kPixels, m.hidden, kClasses, m.dropout));
  }
  if (m.name == "cnn") {
    TORCH_CHECK(m.channels.size() == 2, "model.channels must hold 2 widths");
    return torch::nn::AnyModule(
        models::CnnClassifier(m.channels[0], m.channels[1], kClasses, m.dropout));
  }
  TORCH_CHECK(m.name == "char_gpt", "model.name '", m.name, "' is unknown");
  return torch::nn::AnyModule(models::CharGPT(models::CharGPTOptions()
                                                  .vocab_size(data::CharVocab::kSize)
                                                  .block_size(m.block_size)
                                                  .n_layer(m.n_layer)
                                                  .n_head(m.n_head)
                                                  .n_embd(m.n_embd)
                                                  .dropout(m.dropout)));
}

}  // namespace lowbit::train
