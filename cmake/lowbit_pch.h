// Precompiled header of the torch-facing targets (not installed).
#pragma once
#include <torch/torch.h>
