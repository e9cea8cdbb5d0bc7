/* The plain kernels (CBP_ISA_PLAIN): straightforward loops, the oracle every SIMD variant is
 * tested against, and the scalar helpers every variant shares.  kernels_plain_impl.h is the
 * body, instantiated here once per element type with explicit names (cbp_kernels_plain_f32,
 * cbp_kernels_plain_f64, cbp_activate_f32, ...). */
#include <math.h>
#include <string.h>

#include "kernels.h"

#define REAL float
#define EXP expf
#define TANH tanhf
#define SQRT sqrtf
#define RULE cbp_rule_f32
#define EPI cbp_epi_f32
#define PLAIN(name) name##_f32
#define KERNELS_T cbp_kernels_f32
#define KERNELS_PLAIN cbp_kernels_plain_f32
#define GENERIC_FMA_LOOP cbp_fma_loop_f32_generic
#include "kernels_plain_impl.h"

#define REAL double
#define EXP exp
#define TANH tanh
#define SQRT sqrt
#define RULE cbp_rule_f64
#define EPI cbp_epi_f64
#define PLAIN(name) name##_f64
#define KERNELS_T cbp_kernels_f64
#define KERNELS_PLAIN cbp_kernels_plain_f64
#define GENERIC_FMA_LOOP cbp_fma_loop_f64_generic
#include "kernels_plain_impl.h"
