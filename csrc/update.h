/* The update rule: the one place that says how a parameter moves.  For one parameter p with
 * gradient g (averaged over the mini-batch) and optimizer state s1, s2:
 *   CBP_OPT_SGD       p <- keep p - eta g                 keep = 1 - decay   (eqs. (20)-(21), (93))
 *   CBP_OPT_MOMENTUM  s1 <- mu s1 - eta g - decay p,  p <- p + s1            (chapter 3, momentum)
 *   CBP_OPT_NESTEROV  s1 <- mu s1 - eta g - decay p,  p <- p + mu s1 - eta g - decay p
 *                     (Nesterov momentum as PyTorch's SGD(nesterov=True) and scikit-learn's
 *                     nesterovs_momentum define it, with the velocity scaled by eta)
 *   CBP_OPT_ADAM      g' = g + l2 p;  s1 <- beta1 s1 + (1 - beta1) g';
 *                     s2 <- beta2 s2 + (1 - beta2) g'^2;
 *                     p <- p - step s1 / (sqrt(s2) / sqrt_bc2 + eps)
 *                     (Adam as PyTorch defines it: step = eta / (1 - beta1^t) and
 *                     sqrt_bc2 = sqrt(1 - beta2^t) correct the moments' bias at step t)
 *   CBP_RULE_SGD_SAVE CBP_OPT_SGD that first stores p in s1 (a step's undo: cbp_update.save)
 * decay = eta lmbda / n and l2 = lmbda / n give network2's L2 weight decay (eq. (93)); biases
 * use the same rule with keep = 1, decay = l2 = 0 (they are not decayed).
 *
 * A template: included with UPDATE_T (the value type: REAL or a vector of REAL), UPDATE_RULE
 * (cbp_rule_f32 or cbp_rule_f64), UPDATE_SQRT (a square root on UPDATE_T) and UPDATE_NAME
 * defined, once per value type, by the plain kernels (scalars), by each SIMD variant (vectors
 * and scalars) and by the driver (scalars for biases); every epilogue that updates parameters
 * calls it.  It returns the new p and stores the new state through s1, s2 (only those the
 * rule uses). */
static inline __attribute__((always_inline)) UPDATE_T UPDATE_NAME(UPDATE_T p, UPDATE_T g,
                                                                  UPDATE_T *s1, UPDATE_T *s2,
                                                                  const UPDATE_RULE *r)
{
    switch (r->kind) {
    case CBP_OPT_MOMENTUM: {
        const UPDATE_T v = r->mu * *s1 - r->eta * g - r->decay * p;
        *s1 = v;
        return p + v;
    }
    case CBP_OPT_NESTEROV: {
        const UPDATE_T step = -(r->eta * g) - r->decay * p;
        const UPDATE_T v = r->mu * *s1 + step;
        *s1 = v;
        return p + (r->mu * v + step);
    }
    case CBP_OPT_ADAM: {
        const UPDATE_T gt = g + r->l2 * p;
        const UPDATE_T m = r->beta1 * *s1 + r->one_minus_beta1 * gt;
        const UPDATE_T v = r->beta2 * *s2 + r->one_minus_beta2 * (gt * gt);
        *s1 = m;
        *s2 = v;
        return p - r->step * m / (UPDATE_SQRT(v) / r->sqrt_bc2 + r->eps);
    }
    case CBP_RULE_SGD_SAVE:
        *s1 = p;
        __attribute__((fallthrough));       /* the same step */
    default:
        return r->keep * p - r->eta * g;
    }
}

#undef UPDATE_T
#undef UPDATE_RULE
#undef UPDATE_SQRT
#undef UPDATE_NAME
