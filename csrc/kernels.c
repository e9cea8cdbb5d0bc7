/* Instantiates kernels_impl.h for float (suffix _s) and double (suffix _d). */
#include <math.h>
#include <string.h>

#include "cbackprop.h"

#define REAL float
#define SUF s
#define EXP expf
#include "kernels_impl.h"
#undef REAL
#undef SUF
#undef EXP

#define REAL double
#define SUF d
#define EXP exp
#include "kernels_impl.h"
#undef REAL
#undef SUF
#undef EXP
