/* The update rule: the one place that says how a parameter moves (book eqs. (20)-(21), L2
 * weight decay eq. (93), momentum-based gradient descent, chapter 3).  For one parameter p
 * with averaged gradient g and optimizer state s (the velocity):
 *   CBP_OPT_SGD       p <- keep p - eta g                    keep = 1 - eta lmbda / n
 *   CBP_OPT_MOMENTUM  s <- mu s - eta g - decay p,  p <- p + s,  decay = eta lmbda / n
 * Biases use the same rule with keep = 1, decay = 0 (they are not decayed).
 *
 * A template: included with UPDATE_T (the value type: REAL or a vector of REAL), UPDATE_RULE
 * (cbp_rule_f32 or cbp_rule_f64) and UPDATE_NAME (the function's name) defined, once per
 * value type, by the plain kernels (scalars) and by each SIMD variant (vectors and scalars);
 * every epilogue that updates parameters calls it.  It returns the new p and stores the new
 * state through s (unused by CBP_OPT_SGD). */
static inline __attribute__((always_inline)) UPDATE_T UPDATE_NAME(UPDATE_T p, UPDATE_T g,
                                                                  UPDATE_T *s,
                                                                  const UPDATE_RULE *r)
{
    if (r->kind == CBP_OPT_MOMENTUM) {
        const UPDATE_T v = r->mu * *s - r->eta * g - r->decay * p;
        *s = v;
        return p + v;
    }
    return r->keep * p - r->eta * g;
}

#undef UPDATE_T
#undef UPDATE_RULE
#undef UPDATE_NAME
