"""Fuzz every public entry point of cbackprop.Network with generated bad (and good) input.

The fuzz loop runs in a subprocess, so that a crash in C (segfault, abort) shows up as a
non-zero or negative return code instead of killing pytest.  Generation is driven by a
seeded numpy Generator (deterministic, and much faster than hypothesis for ~10^4 calls).

Inside the subprocess every call must either succeed or raise ValueError, TypeError or
MemoryError with a non-empty message; any other exception or warning is a failure.  A
rejected call must leave the parameters (and the generator that sgd shuffles with) bitwise
unchanged, and so must a successful call of a read-only method (feedforward, backprop,
cost, evaluate).  Results of successful calls are checked for shape and type.
"""
import subprocess
import sys
import textwrap

FUZZ_SCRIPT = textwrap.dedent(r'''
    import collections
    import fractions
    import decimal
    import sys
    import time
    import traceback
    import warnings

    import numpy as np

    import cbackprop

    warnings.simplefilter("error")  # a warning from a call is reported as a failure

    N_CALLS = int(sys.argv[1])
    SEED = int(sys.argv[2])
    rng = np.random.default_rng(SEED)

    ALLOWED = (ValueError, TypeError, MemoryError)
    counts = collections.Counter()      # method -> calls
    outcomes = collections.Counter()    # "ok" or exception type name
    failures = []

    # A pool of networks: both dtypes, one with square layers (so that a network's own
    # weights have the shape of a valid X), one with a single neuron per layer.
    SIZES = [[3, 4, 2], [3, 3, 3], [1, 1], [5, 2, 3, 1], [2, 6, 2]]
    DTYPES = [np.float64, np.float32]
    nets = [cbackprop.Network(s, dtype=d, seed=i) for i, (s, d) in
            enumerate((s, d) for s in SIZES for d in DTYPES)]
    pristine = [[p.copy() for p in n.weights + n.biases] for n in nets]

    def snapshot(net):
        return (b"".join(p.tobytes() for p in net.weights + net.biases),
                repr(net._rng.bit_generator.state), net.num_threads)

    def restore(k):
        net = nets[k]
        p = pristine[k]
        L = len(net.weights)
        net.weights = p[:L]
        net.biases = p[L:]

    # ---- value generators -----------------------------------------------------------------
    JUNK = [None, "abc", "", b"xy", {}, {"a": 1}, {1: 2}, 1j, 2 + 3j, object(), [], [[]],
            [1, [2, 3]], (1, "a"), set([1.0]), 1.5, 0, -1, True, False, np.bool_(True),
            np.float64(np.nan), float("inf"), 10**400, -10**400, print, Ellipsis,
            decimal.Decimal("1.5"), fractions.Fraction(1, 3), np.array("str"),
            np.array([1 + 2j]), np.array([None, 1.0], dtype=object), np.array(b"\x00\x01")]

    def junk():
        return JUNK[rng.integers(len(JUNK))]

    def special_values(arr, dtype):
        """Poke NaN, inf, huge, tiny, negative or zero into arr (in place, if float)."""
        if arr.size == 0 or arr.dtype.kind not in "fc":
            return arr
        kind = rng.integers(8)
        flat = arr.reshape(-1)
        idx = rng.integers(flat.size)
        if kind == 0:
            flat[idx] = np.nan
        elif kind == 1:
            flat[idx] = np.inf if rng.integers(2) else -np.inf
        elif kind == 2:
            with np.errstate(over="ignore"):
                flat[idx] = np.array(rng.choice([1e300, -1e300, 3e38, -3e38, 1e39, np.finfo(arr.dtype).max]),
                                     dtype=arr.dtype)
        elif kind == 3:
            flat[idx] = rng.choice([5e-324, -5e-324, 1e-310, 1e-45, -0.0])
        elif kind == 4:
            arr *= -1e6
        elif kind == 5:
            arr[...] = 0
        return arr

    def rows(net, n_cols, m, dtype):
        """An array of m rows of n_cols, in one of many (valid or invalid) forms."""
        kind = rng.integers(26)
        base = rng.standard_normal((m, n_cols)).astype(dtype)
        if kind <= 5:          # plain, correct (most calls should reach the kernels)
            return base
        if kind == 6:          # one sample
            return base[0]
        if kind == 7:          # wrong dtype
            t = rng.choice(["f4", "f8", "f2", "i4", "i8", "u1", "?", "g", ">f8", "<f4", ">f4", "c16", "O", "U3",
                            "M8[s]", "m8[s]", "V8"])
            try:
                return base.astype(t)
            except (ValueError, TypeError):
                return base.astype("i2")
        if kind == 8:          # wrong shape
            shapes = [(m, n_cols + 1), (m, max(n_cols - 1, 0)), (n_cols + 1,), (m, n_cols, 1), (1, m, n_cols),
                      (), (0,), (0, n_cols), (0, 0), (n_cols, m) if n_cols != m else (n_cols + 2, m + 1)]
            return rng.standard_normal(shapes[rng.integers(len(shapes))]).astype(dtype)
        if kind == 9:          # non-finite / extreme values
            return special_values(base, dtype)
        if kind == 10:         # non-contiguous: every other column / row, reversed
            wide = rng.standard_normal((2 * m, 2 * n_cols)).astype(dtype)
            return [wide[::2, ::2], wide[:m, ::-1][:, :n_cols], wide[::-2][:m, :n_cols]][rng.integers(3)]
        if kind == 11:         # Fortran order
            return np.asfortranarray(base)
        if kind == 12:         # read-only
            base.flags.writeable = False
            return base
        if kind == 13:         # nested Python lists (maybe ragged)
            lst = base.tolist()
            if rng.integers(3) == 0 and lst:
                lst[0] = lst[0] + [1.0]
            return lst
        if kind == 14:         # bool / int arrays
            return (base > 0) if rng.integers(2) else (base * 10).astype(np.int64)
        if kind == 15:         # parameters of this network or another one
            other = nets[rng.integers(len(nets))] if rng.integers(2) else net
            ps = other.weights + other.biases
            return ps[rng.integers(len(ps))]
        if kind == 16:         # junk objects
            return junk()
        if kind == 17:         # a 0-d array / scalar
            return np.array(1.0, dtype=dtype) if rng.integers(2) else 1.0
        if kind == 18:         # empty
            return np.empty((0, n_cols), dtype=dtype) if rng.integers(2) else np.empty((0,), dtype=dtype)
        if kind == 19:         # a subclass of ndarray
            class Sub(np.ndarray):
                pass
            return base.view(Sub)
        if kind == 20:         # huge magnitudes everywhere
            with np.errstate(over="ignore"):
                return (base * np.float64(rng.choice([1e30, 1e200, -1e300]))).astype(dtype)
        if kind == 21:         # the other float dtype, contiguous
            return base.astype(np.float32 if np.dtype(dtype) == np.float64 else np.float64)
        if kind == 22:         # a view of a float buffer with an odd byte offset (unaligned)
            raw = np.zeros(base.nbytes + 1, dtype=np.uint8)
            arr = raw[1:].view(base.dtype).reshape(base.shape)
            arr[...] = base
            return arr
        if kind == 23:         # a complex array with zero imaginary part
            return base.astype(np.complex128)
        if kind == 24:         # tuple of arrays
            return tuple(base)
        return base

    def eta_value(dtype):
        kind = rng.integers(6)
        if kind <= 2:
            return float(rng.choice([0.5, 3.0, 1e-3]))
        if kind == 3:
            return [0.0, -1.0, np.nan, np.inf, -np.inf, 5e-324, 1e-40, 1e39, 1e308, 1e300][rng.integers(10)]
        if kind == 4:
            return [1, np.float32(0.5), np.float64(2.0), np.int64(3), fractions.Fraction(1, 2), 10**400,
                    np.float16(1.0), np.longdouble(0.1)][rng.integers(8)]
        return junk()

    def int_value(valid_max):
        kind = rng.integers(4)
        if kind <= 1:
            return int(rng.integers(1, valid_max + 1))
        if kind == 2:
            return [0, -1, -10**30, np.int64(1), np.uint8(2), np.int32(-3)][rng.integers(6)]
        v = junk()
        # a valid huge epoch count would train (and grow the history) for ever
        return -5 if isinstance(v, int) and not isinstance(v, bool) and v > valid_max else v

    def labels_value(m, n_out):
        kind = rng.integers(8)
        good = rng.integers(0, n_out, size=m)
        if kind <= 2:
            return good
        if kind == 3:
            return good.astype(rng.choice(["i1", "u1", "i2", "u8", "i4", ">i8"]))
        if kind == 4:   # out of range
            bad = good.copy()
            if m:
                bad[rng.integers(m)] = rng.choice([-1, n_out, 2**62, -2**62])
            return bad
        if kind == 5:   # floats, bools, wrong shape
            return [good.astype(float), good.astype(bool), good.reshape(-1, 1), good[:-1], np.append(good, 0),
                    good.tolist(), np.uint64(2**64 - 1) * np.ones(m, dtype=np.uint64)][rng.integers(7)]
        return junk()

    # ---- calls ------------------------------------------------------------------------------
    def check_result(method, net, args, result):
        n_in, n_out = net.sizes[0], net.sizes[-1]
        if method == "feedforward":
            X = np.asarray(args[0])
            want = (n_out,) if X.ndim == 1 else (X.shape[0], n_out)
            assert isinstance(result, np.ndarray) and result.shape == want and result.dtype == net.dtype, \
                (result.shape, want)
            assert np.all((result >= 0) & (result <= 1)), "sigmoid outside [0, 1]"
        elif method == "backprop":
            nb, nw = result
            assert [b.shape for b in nb] == [b.shape for b in net.biases]
            assert [w.shape for w in nw] == [w.shape for w in net.weights]
            assert all(a.dtype == net.dtype for a in nb + nw)
            # the returned gradient must not alias the parameters
            assert not any(np.may_share_memory(a, p) for a in nb + nw for p in net.weights + net.biases)
        elif method == "cost":
            assert type(result) is float and (result >= 0 or np.isnan(result)), result
        elif method == "evaluate":
            m = np.asarray(args[0]).reshape(-1, n_in).shape[0]
            assert type(result) is int and 0 <= result <= m, result
        elif method == "sgd":
            assert isinstance(result, list) and len(result) == args[2]
        elif method in ("update_mini_batch", "set_weights", "set_biases", "set_num_threads", "constructor"):
            pass

    READ_ONLY = {"feedforward", "backprop", "cost", "evaluate", "get_kernels"}

    def make_call(k):
        net = nets[k]
        n_in, n_out = net.sizes[0], net.sizes[-1]
        dt = net.dtype
        m = int(rng.choice([1, 1, 2, 3, 5, 17]))
        method = ["constructor", "feedforward", "backprop", "cost", "update_mini_batch", "evaluate", "sgd",
                  "set_weights", "set_biases", "set_num_threads"][rng.integers(10)]
        X = rows(net, n_in, m, dt)
        Y = rows(net, n_out, m, dt) if rng.integers(4) else rng.random((m, n_out)).astype(dt)
        if method == "constructor":
            kind = rng.integers(6)
            if kind == 0:
                sizes = [int(v) for v in rng.integers(1, 6, size=rng.integers(2, 5))]
            elif kind == 1:   # absurd sizes: refused before allocating (MemoryError) or over the limit
                sizes = [int(rng.integers(2**25, 2**31)), int(rng.integers(2**25, 2**31))]
                if rng.integers(3) == 0:
                    sizes.append(2**31 + int(rng.integers(10)))
            elif kind == 2:
                sizes = [[], [3], [0, 2], [-1, 2], [2, 0], [2.0, 3], [True, 2], ["3", 2], [None, 1], "32",
                         b"ab", 5, None, {3: 1, 2: 1}, np.array(3), np.array([3, 2]), (3, 2), range(1, 4),
                         [np.int64(2), np.uint8(3)], [10**400, 2], [3 + 0j, 2], iter([2, 3]), [[2], [3]],
                         np.array([2.0, 3.0])][rng.integers(24)]
            else:
                sizes = [int(v) for v in rng.integers(1, 6, size=2)]
            dtype = [np.float64, np.float32, "float32", "f8", np.dtype("f4"), None, np.float16, np.int32,
                     "garbage", complex, 3, np.longdouble, ">f8", object][rng.integers(14)] \
                if rng.integers(2) else np.float64
            seed = [None, 0, 7, -1, 2**70, 1.5, "1", True, np.int64(5), [1, 2]][rng.integers(10)] \
                if rng.integers(2) else None
            return method, (sizes,), dict(dtype=dtype, seed=seed)
        if method == "feedforward":
            return method, (X,), {}
        if method in ("backprop", "cost"):
            return method, (X, Y), {}
        if method == "update_mini_batch":
            return method, (X, Y, eta_value(dt)), {}
        if method == "evaluate":
            Xa = np.asarray(X) if isinstance(X, np.ndarray) else X
            mm = Xa.shape[0] if isinstance(Xa, np.ndarray) and Xa.ndim == 2 else m
            return method, (X, labels_value(mm, n_out)), {}
        if method == "sgd":
            epochs = int_value(2)
            mbs = int_value(8) if rng.integers(4) else [10**30, 2**63][rng.integers(2)]
            td = None
            kind = rng.integers(4)
            if kind == 1:
                Xt = rows(net, n_in, m, dt)
                td = (Xt, labels_value(m, n_out))
            elif kind == 2:
                td = [junk(), (X,), (X, None, None), [X, rng.integers(0, n_out, m)]][rng.integers(4)]
            return method, (X, Y, epochs, mbs, eta_value(dt)), dict(test_data=td)
        if method in ("set_weights", "set_biases"):
            cur = net.weights if method == "set_weights" else net.biases
            kind = rng.integers(7)
            if kind <= 1:
                new = [p.copy() + np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) * 0.1 for p in cur]
            elif kind == 2:
                new = [special_values(p.copy(), dt) for p in cur]
            elif kind == 3:
                new = [p.copy() for p in cur][:-1] if rng.integers(2) else [p.copy() for p in cur] + [cur[0]]
            elif kind == 4:
                new = [rows(net, p.shape[-1], p.shape[0] if p.ndim == 2 else 1, dt) for p in cur]
            elif kind == 5:
                new = junk()
            else:
                new = [np.asfortranarray(p.T.T) if p.ndim == 2 else p[::-1] for p in cur]
                if rng.integers(2):
                    new = tuple(x.tolist() for x in new)
            return method, (new,), {}
        if method == "set_num_threads":
            return method, ([1, 2, 64, 0, 65, -1, 1.0, True, "2", None, np.int64(2), 2**70][rng.integers(12)],), {}

    def invoke(k, method, args, kwargs):
        net = nets[k]
        if method == "constructor":
            return cbackprop.Network(*args, **kwargs)
        if method == "set_weights":
            net.weights = args[0]
            return None
        if method == "set_biases":
            net.biases = args[0]
            return None
        if method == "set_num_threads":
            net.num_threads = args[0]
            return None
        return getattr(net, method)(*args, **kwargs)

    def describe(method, args, kwargs):
        def d(a):
            if isinstance(a, np.ndarray):
                return (f"ndarray(shape={a.shape}, dtype={a.dtype}, C={a.flags.c_contiguous}, "
                        f"F={a.flags.f_contiguous}, writeable={a.flags.writeable})")
            r = repr(a)
            return r if len(r) < 80 else r[:77] + "..."
        return f"{method}({', '.join(d(a) for a in args)}, {', '.join(f'{k}={d(v)}' for k, v in kwargs.items())})"

    t0 = time.perf_counter()
    for i in range(N_CALLS):
        k = int(rng.integers(len(nets)))
        net = nets[k]
        method, args, kwargs = make_call(k)
        counts[method] += 1
        before = snapshot(net)
        try:
            result = invoke(k, method, args, kwargs)
        except ALLOWED as exc:
            outcomes[type(exc).__name__] += 1
            if not str(exc):
                failures.append(f"call {i}: {describe(method, args, kwargs)} raised {type(exc).__name__} "
                                f"with an empty message")
            if method != "constructor" and snapshot(net) != before:
                failures.append(f"call {i}: {describe(method, args, kwargs)} raised {type(exc).__name__}: {exc} "
                                f"but changed the network")
        except BaseException as exc:  # any other exception, or a warning turned into one
            outcomes[type(exc).__name__] += 1
            failures.append(f"call {i}: {describe(method, args, kwargs)} raised {type(exc).__name__}: {exc}\n"
                            + traceback.format_exc(limit=4))
        else:
            outcomes["ok"] += 1
            try:
                check_result(method, net, args, result)
            except AssertionError as exc:
                failures.append(f"call {i}: {describe(method, args, kwargs)} returned a bad result: {exc}")
            if method in READ_ONLY and snapshot(net) != before:
                failures.append(f"call {i}: read-only {describe(method, args, kwargs)} changed the network")
            if method == "constructor":
                if not (len(result.sizes) >= 2 and all(type(n) is int and n >= 1 for n in result.sizes)
                        and result.dtype in (np.float32, np.float64)):
                    failures.append(f"call {i}: {describe(method, args, kwargs)} made a bad network {result!r}")
                del result
        # keep the parameters meaningful: training with huge eta can saturate them
        if not all(np.isfinite(p).all() and np.abs(p).max() < 1e6 for p in net.weights + net.biases):
            restore(k)
            outcomes["restored"] += 1
        if len(failures) > 50:
            break

    elapsed = time.perf_counter() - t0
    total = sum(counts.values())
    for f in failures[:20]:
        print("FAILURE:", f, file=sys.stderr)
    print(f"FUZZ calls={total} failures={len(failures)} seconds={elapsed:.1f} "
          f"outcomes={dict(sorted(outcomes.items()))} methods={dict(sorted(counts.items()))}")
    sys.exit(1 if failures else 0)
''')

N_CALLS = 60_000


def test_fuzz_every_public_method_in_a_subprocess(tmp_path):
    script = tmp_path / "fuzz_cbackprop.py"
    script.write_text(FUZZ_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(N_CALLS), "20261123"],
                          capture_output=True, text=True, timeout=240)
    summary = [line for line in proc.stdout.splitlines() if line.startswith("FUZZ ")]
    report = f"returncode={proc.returncode}\nstdout tail:\n{proc.stdout[-3000:]}\nstderr tail:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, report
    assert len(summary) == 1, report
    calls = int(summary[0].split()[1].split("=")[1])
    assert calls >= 10_000, report
    print(summary[0])
