/* The per-element update rules of the optimizers, shared verbatim by the CPU
 * kernels (compiled as C++), the CUDA kernels (the same C++ on the device) and
 * the OpenCL program optimizer.cl (this file is prepended to it after
 * shared_math.h). A rule maps (param, grad, state1,
 * state2) to new states and an update direction u; every optimizer then writes
 * p <- p * decay + lr_step * u. Same subset of C++17 / OpenCL C 1.2 as
 * shared_math.h: no pointers, no address spaces. Multiply-adds are fused
 * (one rounding) exactly where libtorch's vectorised CPU kernels fuse them
 * (add_ with alpha, addcmul_), and nowhere else: fma is correctly rounded on
 * both backends, so they still agree bit for bit. */
#ifndef LOWBIT_KERNELS_OPTIMIZER_RULES_H
#define LOWBIT_KERNELS_OPTIMIZER_RULES_H

#ifdef __OPENCL_VERSION__
/* Separate roundings, as the CPU kernels (built with -ffp-contract=off). */
#pragma OPENCL FP_CONTRACT OFF
#define LB_SQRT(x) sqrt(x)
#define LB_FMA(a, b, c) fma(a, b, c)
#else
#include <cmath>

#include "kernels/shared_math.h"
namespace lowbit::kernels {
#ifdef __CUDA_ARCH__
/* Correctly rounded on the device too (nvcc's defaults: -prec-sqrt=true; the
 * CUDA kernels build with -fmad=false so that nothing else fuses). */
#define LB_SQRT(x) sqrtf(x)
#define LB_FMA(a, b, c) fmaf(a, b, c)
#else
#define LB_SQRT(x) std::sqrt(x)
#define LB_FMA(a, b, c) std::fma(a, b, c)
#endif
#endif

/* Rules, numbered as kernels::OptimizerRule. */
#define LB_RULE_ADAM 0
#define LB_RULE_LAMB 1
#define LB_RULE_LION 2
#define LB_RULE_RMSPROP 3

/* Hyper-parameters of one step, already combined on the host (in double, then
 * rounded once to float, as libtorch rounds its scalar arguments).
 *   Adam, LAMB: beta1/beta2 drive state1 (m) / state2 (v).
 *   Lion: beta1 interpolates the update sign, beta2 drives state1 (m).
 *   RMSprop: beta1 = alpha drives state1 (square average); beta2 = momentum
 *     drives state2 (momentum buffer; absent and read as 0 without momentum).
 * eps: Adam and LAMB take eps * sqrt(1 - beta2^t) (see lb_rule_adam).
 * l2: coefficient of p added to the gradient (Adam, RMSprop: torch's coupled
 *   weight_decay) or to the direction (LAMB's lambda); decay: decoupled weight
 *   decay 1 - lr * wd (AdamW, Lion), 1 otherwise; lr_step: the (negative) step
 *   that multiplies u; m_scale: LAMB's bias corrections sqrt(1 - beta2^t) /
 *   (1 - beta1^t); gnorm_scale: percentile clipping factor. */
typedef struct {
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float l2;
  float decay;
  float lr_step;
  float m_scale;
  float gnorm_scale;
} lb_optim_args;

typedef struct {
  float s1;
  float s2;
  float u;
} lb_optim_result;

/* torch::optim::Adam / AdamW: g = grad + wd * p for Adam's coupled decay
 * (grad.add(p, wd)), m = b1 m + (1 - b1) g (exp_avg.mul_(b1).add_(g, 1 - b1)),
 * v = b2 v + (1 - b2) g^2 (exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)), then
 * p -= lr/c1 * m / (sqrt(v) / sqrt(c2) + eps) with c = 1 - beta^t, arranged as
 * bitsandbytes does with one division: u = m / (sqrt(v) + eps * sqrt(c2)),
 * lr_step = -lr * sqrt(c2) / c1 (torch's value up to float rounding). */
LB_FN lb_optim_result lb_rule_adam(lb_optim_args a, float p, float g, float s1, float s2) {
  lb_optim_result r;
  g = LB_FMA(p, a.l2, g);
  r.s1 = LB_FMA(g, a.one_minus_beta1, s1 * a.beta1);
  r.s2 = LB_FMA(a.one_minus_beta2 * g, g, s2 * a.beta2);
  r.u = r.s1 / (LB_SQRT(r.s2) + a.eps);
  return r;
}

/* LAMB (You et al. 2019, Algorithm 2): the Adam moments with bias correction,
 * u = m_hat / (sqrt(v_hat) + eps) + lambda * p, computed as m * m_scale /
 * (sqrt(v) + eps * sqrt(c2)); the trust ratio reaches it through lr_step. */
LB_FN lb_optim_result lb_rule_lamb(lb_optim_args a, float p, float g, float s1, float s2) {
  lb_optim_result r;
  r.s1 = LB_FMA(g, a.one_minus_beta1, s1 * a.beta1);
  r.s2 = LB_FMA(a.one_minus_beta2 * g, g, s2 * a.beta2);
  r.u = LB_FMA(a.l2, p, r.s1 * a.m_scale / (LB_SQRT(r.s2) + a.eps));
  return r;
}

/* Lion (Chen et al. 2023, Algorithm 2): u = sign(b1 m + (1 - b1) g), then
 * m = b2 m + (1 - b2) g, each written as mul_ then add_ with alpha.
 * sign(0) = 0. */
LB_FN lb_optim_result lb_rule_lion(lb_optim_args a, float p, float g, float s1, float s2) {
  lb_optim_result r;
  const float c = LB_FMA(g, a.one_minus_beta1, s1 * a.beta1);
  r.u = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
  r.s1 = LB_FMA(g, a.one_minus_beta2, s1 * a.beta2);
  r.s2 = s2;
  (void)p;
  return r;
}

/* torch::optim::RMSprop (not centered): g = grad + wd * p (grad.add(p, wd)),
 * s = alpha s + (1 - alpha) g^2 (square_avg.mul_(alpha).addcmul_(g, g,
 * 1 - alpha)), avg = sqrt(s) + eps; with momentum b = momentum * b + g / avg
 * (buf.mul_(momentum).addcdiv_(g, avg)) and u = b, else u = g / avg. Without
 * momentum state2 reads as 0 and beta2 is 0, so u = 0 * 0 + g / avg exactly. */
LB_FN lb_optim_result lb_rule_rmsprop(lb_optim_args a, float p, float g, float s1, float s2) {
  lb_optim_result r;
  g = LB_FMA(p, a.l2, g);
  r.s1 = LB_FMA(a.one_minus_beta1 * g, g, s1 * a.beta1);
  r.s2 = s2 * a.beta2 + g / (LB_SQRT(r.s1) + a.eps);
  r.u = r.s2;
  return r;
}

/* Rule `rule` (LB_RULE_*) by a switch: what the OpenCL kernels call; the CPU
 * and CUDA kernels pick the rule once per call instead. */
LB_FN lb_optim_result lb_rule(int rule, lb_optim_args a, float p, float g, float s1, float s2) {
  if (rule == LB_RULE_LAMB) return lb_rule_lamb(a, p, g, s1, s2);
  if (rule == LB_RULE_LION) return lb_rule_lion(a, p, g, s1, s2);
  if (rule == LB_RULE_RMSPROP) return lb_rule_rmsprop(a, p, g, s1, s2);
  return lb_rule_adam(a, p, g, s1, s2);
}

/* The one rule every optimizer shares: decoupled decay, then the step (fused,
 * as torch's p.add_(buf, -lr)). */
LB_FN float lb_apply_update(lb_optim_args a, float p, float u) {
  return LB_FMA(a.lr_step, u, p * a.decay);
}

#ifndef __OPENCL_VERSION__
}  // namespace lowbit::kernels
#endif

#endif /* LOWBIT_KERNELS_OPTIMIZER_RULES_H */
