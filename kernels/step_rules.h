/* What an optimizer step decides from sums over whole tensors, shared verbatim
 * by the host (CPU and OpenCL backends run it there) and the CUDA kernels (one
 * __host__ __device__ copy), so that every backend decides with the same double
 * operations and a device step needs no host round trip: the step count and
 * bias corrections, percentile clipping (bitsandbytes' rule), LAMB's trust ratio
 * and max_unorm. Also the two records those decisions live in (StepSlot per
 * parameter, StepFlags per optimizer), laid out the same on host and device.
 * C++17 and CUDA only; the OpenCL programs never see it. */
#ifndef LOWBIT_KERNELS_STEP_RULES_H
#define LOWBIT_KERNELS_STEP_RULES_H

#include <cstdint>

#include "kernels/optimizer_rules.h"

namespace lowbit::kernels {

/* Hyper-parameters of one parameter group, as the options hold them (double).
 *   Adam family (rule LB_RULE_ADAM): decoupled = AdamW's decay p *= 1 - lr * wd,
 *     else wd is added to the gradient (torch's Adam); bias_correction = 1.
 *   LAMB: bias_correction optional, clamp_value bounds ||p|| in the trust ratio.
 *   Lion: decoupled = 1 (its weight decay is decoupled).
 *   RMSprop: beta1 = alpha, beta2 = momentum.
 * percentile: percentile clipping's percentile (100: off); max_unorm: 0 = off. */
typedef struct {
  int32_t rule;
  int32_t decoupled;
  int32_t bias_correction;
  int32_t percentile;
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  double clamp_value;
  double max_unorm;
} lb_step_hparams;

/* One parameter's part of a step, in the backend's memory. */
typedef struct {
  double grad_sq;          /* sum of g^2 (gradient_stats) */
  double update_sq;        /* sum of u^2, u the rule's direction (optimizer_update_norms) */
  double param_sq;         /* sum of p^2 before the step (optimizer_update_norms) */
  uint32_t grad_nonfinite; /* g held NaN / inf, or a block's float sum of g^2 overflowed */
  uint32_t reserved;
  lb_optim_args args;      /* the step's kernel arguments (optimizer_prepare / _scale) */
} lb_step_slot;

/* One optimizer's flags and counters, in the backend's memory. */
typedef struct {
  uint32_t found_inf; /* set by optimizer_prepare: this step is skipped */
  uint32_t reserved;
  uint64_t skipped_steps;
  uint64_t skipped_blocks; /* blocks left unchanged because their update was not finite */
} lb_step_flags;

/* Length of percentile clipping's history of squared gradient norms. */
#define LB_GNORM_HISTORY 100

#ifdef __CUDACC__
#define LB_HD static inline __host__ __device__
#else
#define LB_HD static inline
#endif

/* b^t by repeated squaring: the same double operations on every backend
 * (std::pow and CUDA's pow may differ in the last bit). t >= 0. */
LB_HD double lb_pow_int(double b, int64_t t) {
  double r = 1.0;
  while (t > 0) {
    if (t & 1) r = r * b;
    b = b * b;
    t >>= 1;
  }
  return r;
}

/* Kernel arguments of step number `step` (1-based) with the step scaled by
 * lr_scale (trust ratio, max_unorm); gnorm_scale is 1 (set by the caller).
 * Combined in double, rounded once to float, as libtorch rounds its scalars. */
LB_HD lb_optim_args lb_step_args(const lb_step_hparams& h, int64_t step, double lr_scale) {
  lb_optim_args a = {};
  const bool corrected = h.bias_correction != 0;
  const double c1 = corrected ? 1 - lb_pow_int(h.beta1, step) : 1.0;
  const double sqrt_c2 = corrected ? sqrt(1 - lb_pow_int(h.beta2, step)) : 1.0;
  a.beta1 = float(h.beta1);
  a.one_minus_beta1 = float(1 - h.beta1);
  a.beta2 = float(h.beta2);
  a.decay = 1.0f;
  a.gnorm_scale = 1.0f;
  a.lr_step = float(-h.lr * lr_scale);
  switch (h.rule) {
    case LB_RULE_ADAM:
      /* p -= lr / c1 * m / (sqrt(v) / sqrt(c2) + eps), arranged with one
       * division (see lb_rule_adam). */
      a.one_minus_beta2 = float(1 - h.beta2);
      a.eps = float(h.eps * sqrt_c2);
      a.l2 = h.decoupled ? 0.0f : float(h.weight_decay);
      a.decay = h.decoupled ? float(1 - h.lr * h.weight_decay) : 1.0f;
      a.lr_step = float(-h.lr * sqrt_c2 / c1 * lr_scale);
      break;
    case LB_RULE_LAMB:
      a.one_minus_beta2 = float(1 - h.beta2);
      a.eps = float(h.eps * sqrt_c2);
      a.l2 = float(h.weight_decay);
      a.m_scale = float(sqrt_c2 / c1);
      break;
    case LB_RULE_LION:
      a.one_minus_beta2 = float(1 - h.beta2);
      a.decay = float(1 - h.lr * h.weight_decay);
      break;
    default: /* LB_RULE_RMSPROP: beta2 is the momentum, without a (1 - beta2) term */
      a.eps = float(h.eps);
      a.l2 = float(h.weight_decay);
      break;
  }
  return a;
}

/* Percentile clipping as bitsandbytes does it: the squared norm enters slot
 * step % 100 of the history (every slot on step 1); the gradient is scaled by
 * clip / norm when its norm exceeds clip = sqrt(sorted history[percentile]).
 * Returns that scale and updates `history` (LB_GNORM_HISTORY floats). */
LB_HD double lb_percentile_scale(float* history, int64_t step, double sum_sq, int percentile) {
  const float current = float(sum_sq);
  if (step == 1)
    for (int i = 0; i < LB_GNORM_HISTORY; ++i) history[i] = current;
  else
    history[step % LB_GNORM_HISTORY] = current;
  /* The percentile-th smallest entry, by insertion sort of a copy (a
   * selection, no arithmetic: the same value on every backend). */
  float sorted[LB_GNORM_HISTORY];
  for (int i = 0; i < LB_GNORM_HISTORY; ++i) {
    const float v = history[i];
    int j = i;
    for (; j > 0 && sorted[j - 1] > v; --j) sorted[j] = sorted[j - 1];
    sorted[j] = v;
  }
  const float chosen = sorted[percentile];
  const double clip = sqrt(double(chosen));
  const double norm = sqrt(double(current));
  return norm > clip ? clip / norm : 1.0;
}

/* The step's scale from the norms of u and p: LAMB's trust ratio (You et al.
 * 2019) min(||p||, clamp_value) / ||u|| (1 when either is 0 or ||u|| is not
 * finite), then bitsandbytes' max_unorm: the norm of the step over lr (for
 * Adam, of the bias-corrected m / (sqrt(v) + eps)) is capped at
 * max_unorm * ||p||. `lr_step` is the float step of lb_step_args at scale 1. */
LB_HD double lb_norm_scale(const lb_step_hparams& h, float lr_step, double update_sq,
                           double param_sq) {
  const double param_norm = sqrt(param_sq);
  const double update_norm = sqrt(update_sq);
  const bool update_finite = update_norm - update_norm == 0.0; /* not inf, not NaN */
  double lr_scale = 1.0;
  if (h.rule == LB_RULE_LAMB) {
    const double phi = h.clamp_value < param_norm ? h.clamp_value : param_norm; /* std::min */
    if (phi > 0 && update_norm > 0 && update_finite) lr_scale = phi / update_norm;
  }
  if (h.max_unorm > 0 && h.lr > 0 && update_finite) {
    const double unorm = update_norm * fabs(double(lr_step)) * lr_scale / h.lr;
    const double cap = h.max_unorm * param_norm;
    if (unorm > cap) lr_scale *= cap / unorm;
  }
  return lr_scale;
}

/* Whether a step of this parameter needs optimizer_update_norms first. */
LB_HD bool lb_needs_norms(const lb_step_hparams& h) {
  return h.rule == LB_RULE_LAMB || h.max_unorm > 0;
}

}  // namespace lowbit::kernels

#endif /* LOWBIT_KERNELS_STEP_RULES_H */
