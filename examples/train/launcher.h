// `lowbit-train --nproc N`: starts N copies of this program on this machine as the ranks of
// one run (RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT set, as torchrun
// sets them), waits for them, and when one fails stops the others and says which rank failed
// and how.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace lowbit::train {

// Runs `args` (the program's arguments without --nproc) as `nproc` ranks. Returns 0 when every
// rank exits 0; 130 when they stopped on Ctrl-C (each with a checkpoint); otherwise 1, after
// writing to `err` the first rank that failed (its exit status or signal) and terminating the
// others (SIGTERM, then SIGKILL after a grace period).
int launch_local_ranks(int nproc, const std::vector<std::string>& args, std::ostream& err);

}  // namespace lowbit::train
