// Finds and loads liblowbit_sentencepiece (see module_api.h for why it is a
// separate module) once per process.
#pragma once

#include "text/sentencepiece/module_api.h"

namespace lowbit::text::sentencepiece_module {

// Looks in $LOWBIT_SENTENCEPIECE_MODULE (a file), then the install and build
// directories CMake recorded. Throws Error when lowbit was built without
// SentencePiece or no module loads; the message lists the paths tried.
const Api& api();

}  // namespace lowbit::text::sentencepiece_module
