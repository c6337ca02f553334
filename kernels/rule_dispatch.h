// The update rules of kernels/optimizer_rules.h as types, and the one switch
// from an OptimizerRule (and whether RMSprop keeps its momentum state) to
// them: what the CPU and CUDA kernels instantiate their update loops with.
// C++ and CUDA (the OpenCL programs switch on the rule per element instead).
#pragma once

#include <type_traits>

#include "kernels/backend.h"

namespace lowbit::kernels {

struct AdamRule {
  LB_FN lb_optim_result apply(const lb_optim_args& a, float p, float g, float s1, float s2) {
    return lb_rule_adam(a, p, g, s1, s2);
  }
};
struct LambRule {
  LB_FN lb_optim_result apply(const lb_optim_args& a, float p, float g, float s1, float s2) {
    return lb_rule_lamb(a, p, g, s1, s2);
  }
};
struct LionRule {
  LB_FN lb_optim_result apply(const lb_optim_args& a, float p, float g, float s1, float s2) {
    return lb_rule_lion(a, p, g, s1, s2);
  }
};
struct RmspropRule {
  LB_FN lb_optim_result apply(const lb_optim_args& a, float p, float g, float s1, float s2) {
    return lb_rule_rmsprop(a, p, g, s1, s2);
  }
};

// Calls fn(Rule{}, std::bool_constant<two states>{}): Adam and LAMB have two
// states, Lion one, RMSprop two with momentum (`has_state2`).
template <typename Fn>
void with_rule(OptimizerRule rule, bool has_state2, Fn&& fn) {
  switch (rule) {
    case OptimizerRule::Adam: fn(AdamRule{}, std::true_type{}); return;
    case OptimizerRule::LAMB: fn(LambRule{}, std::true_type{}); return;
    case OptimizerRule::Lion: fn(LionRule{}, std::false_type{}); return;
    case OptimizerRule::RMSprop:
      if (has_state2)
        fn(RmspropRule{}, std::true_type{});
      else
        fn(RmspropRule{}, std::false_type{});
      return;
  }
}

}  // namespace lowbit::kernels
