#!/usr/bin/env python3
"""The benchmark's peers: the same algorithm as bench.py's `numpy_epoch` written with PyTorch
(hand-written backprop, and autograd) and JAX (a jitted step called from a Python loop, and
the whole epoch as one jitted `lax.scan`).

bench.py runs this file in a child process, one per (peer, dtype, config), with an
interpreter that imports the peer's framework (`bench.py --peer-python PATH`):

    python benchmarks/peers.py SPEC.json

SPEC names the peer, dtype, config, sample count, repeats, eta, data and an .npz path.  The
child loads the same data as bench.py, draws the same permutations, and runs the peer's epoch

  1. on a short epoch (the rows perms[0][:mbs + n % mbs]: one full mini-batch, then the
     epoch's partial one when there is one) from the initial parameters,
  2. on the warm-up epoch (perms[0]; it also compiles JAX's functions),
  3. on the timed epochs (perms[1:]),

writes the parameters after 1. and 2. to the .npz (w0, b0, ... as `short_*` and `warmup_*`)
for bench.py to compare with NumPy's, and prints one JSON line with the seconds of 3.  It
imports bench.py for the data and the permutations, never cbackprop.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (CONFIGS, _timed, as_float, epoch_permutations, init_params,  # noqa: E402
                   load_u8, short_epoch_rows)


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------

class TorchPeer:
    """torch: hand-written backprop (no autograd) with addmm, sigmoid and in-place updates
    under inference_mode, torch's default thread count.  Parameters are torch tensors that
    share memory with NumPy arrays of w^l [n_l, n_{l-1}] and b^l [n_l]."""

    def __init__(self, sizes, mbs, eta, X, Y):
        import torch
        self.torch, self.mbs, self.eta = torch, mbs, eta
        W, B = init_params(sizes, X.dtype)
        self.W = [torch.from_numpy(w) for w in W]
        self.B = [torch.from_numpy(b) for b in B]
        self.X, self.Y = torch.from_numpy(X), torch.from_numpy(Y)

    def epoch(self, perm):
        torch, W, B, mbs, eta = self.torch, self.W, self.B, self.mbs, self.eta
        with torch.inference_mode():
            idx = torch.from_numpy(perm)
            Xp, Yp = self.X.index_select(0, idx), self.Y.index_select(0, idx)
            for k in range(0, Xp.shape[0], mbs):
                x, y = Xp[k:k + mbs], Yp[k:k + mbs]
                acts = [x]
                a = x
                for w, b in zip(W, B):
                    a = torch.sigmoid(torch.addmm(b, a, w.t()))
                    acts.append(a)
                delta = (a - y).div_(x.shape[0]).mul_(a * (1 - a))      # BP1
                for l in range(len(W) - 1, -1, -1):
                    a_prev = acts[l]
                    nabla_w = delta.t().mm(a_prev)                       # BP4
                    nabla_b = delta.sum(0)                               # BP3
                    if l > 0:                                            # BP2, old w^l
                        d_prev = delta.mm(W[l]).mul_(a_prev * (1 - a_prev))
                    W[l].add_(nabla_w, alpha=-eta)
                    B[l].add_(nabla_b, alpha=-eta)
                    if l > 0:
                        delta = d_prev

    def params(self):
        return [w.numpy().copy() for w in self.W], [b.numpy().copy() for b in self.B]

    def info(self):
        return {"version": self.torch.__version__, "threads": self.torch.get_num_threads()}


class TorchAutogradPeer(TorchPeer):
    """torch-autograd: nn.Sequential of nn.Linear and nn.Sigmoid, the book's quadratic cost
    C = 1/(2m) sum ||a - y||^2 over the mini-batch (its gradient is the book's), loss.backward()
    and torch.optim.SGD(lr=eta), torch's default thread count."""

    def __init__(self, sizes, mbs, eta, X, Y):
        import torch
        from torch import nn
        self.torch, self.mbs, self.eta = torch, mbs, eta
        tdt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[X.dtype]
        W, B = init_params(sizes, X.dtype)
        layers = []
        for w, b in zip(W, B):
            lin = nn.Linear(w.shape[1], w.shape[0], dtype=tdt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin, nn.Sigmoid()]
        self.model = nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=eta)
        self.X, self.Y = torch.from_numpy(X), torch.from_numpy(Y)

    def epoch(self, perm):
        torch, model, opt, mbs = self.torch, self.model, self.opt, self.mbs
        idx = torch.from_numpy(perm)
        Xp, Yp = self.X.index_select(0, idx), self.Y.index_select(0, idx)
        for k in range(0, Xp.shape[0], mbs):
            x, y = Xp[k:k + mbs], Yp[k:k + mbs]
            opt.zero_grad()
            loss = (model(x) - y).square().sum() / (2 * x.shape[0])
            loss.backward()
            opt.step()

    def params(self):
        lins = [m for m in self.model if hasattr(m, "weight")]
        return ([m.weight.detach().numpy().copy() for m in lins],
                [m.bias.detach().numpy().copy() for m in lins])


# ---------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------

def jax_sgd_step(eta):
    """step(params, x, y) -> params after one SGD step on the mini-batch (x [m, n_0], y [m,
    n_L]) with jax.grad of the book's quadratic cost C = 1/(2m) sum ||a - y||^2, a^l =
    sigmoid(a^{l-1} w^T + b).  params: ((w^1, b^1), ...)."""
    import jax
    import jax.numpy as jnp

    def cost(params, x, y):
        a = x
        for w, b in params:
            a = jax.nn.sigmoid(a @ w.T + b)
        return jnp.sum(jnp.square(a - y)) / (2 * x.shape[0])

    def step(params, x, y):
        grads = jax.grad(cost)(params, x, y)
        return jax.tree.map(lambda p, g: p - eta * g, params, grads)
    return step


class JaxStepPeer:
    """jax-step: one jitted SGD step (it slices its mini-batch out of the gathered epoch data
    with lax.dynamic_slice), called from a Python loop; the epoch's data X[perm] is gathered
    on the device by a jitted gather inside the timing.  The parameters are donated."""

    def __init__(self, sizes, mbs, eta, X, Y):
        import jax
        import jax.numpy as jnp
        from jax import lax
        self.jax, self.jnp, self.mbs = jax, jnp, mbs
        step = jax_sgd_step(eta)
        W, B = init_params(sizes, X.dtype)
        self.p = tuple((jnp.asarray(w), jnp.asarray(b)) for w, b in zip(W, B))
        self.X, self.Y = jnp.asarray(X), jnp.asarray(Y)

        def step_at(params, Xp, Yp, start, m):
            return step(params, lax.dynamic_slice_in_dim(Xp, start, m),
                        lax.dynamic_slice_in_dim(Yp, start, m))
        self.step_at = jax.jit(step_at, static_argnums=4, donate_argnums=0)
        self.gather = jax.jit(lambda X, Y, perm: (X[perm], Y[perm]))

    def epoch(self, perm):
        mbs, step_at = self.mbs, self.step_at
        Xp, Yp = self.gather(self.X, self.Y, self.jnp.asarray(perm))
        n = len(perm)
        p = self.p
        for k in range(0, n - n % mbs, mbs):
            p = step_at(p, Xp, Yp, k, mbs)
        if n % mbs:                                   # the epoch's partial mini-batch
            p = step_at(p, Xp, Yp, n - n % mbs, n % mbs)
        self.p = self.jax.block_until_ready(p)

    def params(self):
        return [np.asarray(w).copy() for w, _ in self.p], [np.asarray(b).copy() for _, b in self.p]

    def info(self):
        return {"version": self.jax.__version__, "jaxlib": _jaxlib_version(),
                "devices": [str(d) for d in self.jax.devices()], "x64": bool(self.jax.config.jax_enable_x64)}


class JaxScanPeer(JaxStepPeer):
    """jax-scan: the whole epoch as one jitted function: the gather X[perm], lax.scan of the
    SGD step over the full mini-batches (data reshaped [batches, mbs, n]), then one more step on
    the epoch's partial mini-batch when there is one (static shapes: it is traced once per
    epoch length).  The parameters are donated."""

    def __init__(self, sizes, mbs, eta, X, Y):
        super().__init__(sizes, mbs, eta, X, Y)
        import jax
        from jax import lax
        step = jax_sgd_step(eta)

        def epoch_scan(params, X, Y, perm):
            Xp, Yp = X[perm], Y[perm]
            n = perm.shape[0]
            full = n - n % mbs
            xb = Xp[:full].reshape(full // mbs, mbs, Xp.shape[1])
            yb = Yp[:full].reshape(full // mbs, mbs, Yp.shape[1])
            params, _ = lax.scan(lambda p, xy: (step(p, *xy), None), params, (xb, yb))
            if full < n:
                params = step(params, Xp[full:], Yp[full:])
            return params
        self.epoch_scan = jax.jit(epoch_scan, donate_argnums=0)

    def epoch(self, perm):
        p = self.epoch_scan(self.p, self.X, self.Y, self.jnp.asarray(perm))
        self.p = self.jax.block_until_ready(p)


def _jaxlib_version():
    try:
        import jaxlib
        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


PEER_CLASSES = {"torch": TorchPeer, "torch-autograd": TorchAutogradPeer,
                "jax-step": JaxStepPeer, "jax-scan": JaxScanPeer}


# ---------------------------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------------------------

def param_arrays(prefix, weights_biases):
    """{prefix_w0: w^1, prefix_b0: b^1, ...} for np.savez."""
    W, B = weights_biases
    return {**{f"{prefix}_w{i}": w for i, w in enumerate(W)},
            **{f"{prefix}_b{i}": b for i, b in enumerate(B)}}


def run(spec):
    """Run one peer as SPEC says; returns the JSON-able result (see the module docstring)."""
    peer, dtype = spec["peer"], np.dtype(spec["dtype"])
    if peer.startswith("jax") and dtype == np.float64:
        import jax
        jax.config.update("jax_enable_x64", True)
    sizes, mbs = CONFIGS[spec["config"]]
    n = spec["n"]
    path = spec["data_path"] if spec["data_source"] == "mnist" else "/nonexistent/synthetic"
    u8, labels, _ = load_u8(path, n)
    X, Y = as_float(u8, labels, dtype)
    perms = epoch_permutations(n, spec["repeats"] + 1)
    cls = PEER_CLASSES[peer]
    short = cls(sizes, mbs, spec["eta"], X, Y)
    short.epoch(short_epoch_rows(perms[0], n, mbs))
    saved = param_arrays("short", short.params())
    del short
    impl = cls(sizes, mbs, spec["eta"], X, Y)
    t0 = time.perf_counter()
    impl.epoch(perms[0])                     # warm-up (and JAX's compile for this shape)
    warmup = time.perf_counter() - t0
    saved.update(param_arrays("warmup", impl.params()))
    np.savez(spec["out_npz"], **saved)
    times = [_timed(impl.epoch, perm) for perm in perms[1:]]
    return {"peer": peer, "config": spec["config"], "dtype": dtype.name, "times": times,
            "warmup_seconds": warmup, "python": sys.executable, **impl.info()}


def main(argv):
    if len(argv) != 1:
        print("usage: peers.py SPEC.json (bench.py runs this; see its --peer-python)", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
