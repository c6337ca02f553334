// lowbit's 8-bit optimizers, drop-in replacements for torch::optim:
// Adam8bit, AdamW8bit, Lion8bit, LAMB8bit, RMSprop8bit (and their options).
// Replace torch::optim::AdamW(params, AdamWOptions(1e-3)) by
// lowbit::optim::AdamW8bit(params, AdamW8bitOptions(1e-3)).
#pragma once

#include "optim/adam8bit.h"
#include "optim/lamb8bit.h"
#include "optim/lion8bit.h"
#include "optim/optimizer8bit.h"
#include "optim/rmsprop8bit.h"
