"""Memory leaks: the resident set must grow less than 1 MiB over 100,000 calls of each public
method of cbackprop.Network on a tiny network ([4, 3, 2], batch of 2), in both dtypes, on
the fast paths, the general (converting) paths and the rejecting paths.

Each measurement runs in a fresh subprocess (a clean heap, nothing else of pytest's in it):
2,000 warm-up calls, then the baseline RSS (/proc/self/statm), then 100,000 calls, then RSS
again.  Linux only (/proc).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.slow,  # about 45 s: the README's test command skips it, .ci/run runs it
    pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"),
                       reason="RSS from /proc/self/statm is Linux-only"),
]
# AddressSanitizer keeps freed memory in quarantine (256 MiB by default), so RSS grows under
# tools/sanitize.sh whatever the code does; ASan itself reports real leaks there.
_UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")

CALLS = 100_000
WARMUP = 2_000
LIMIT = 1 << 20  # bytes

SCRIPT = textwrap.dedent(r'''
    import gc
    import json
    import os
    import sys
    import time
    import warnings

    import numpy as np

    import cbackprop

    warnings.simplefilter("error")
    CALLS, WARMUP = int(sys.argv[1]), int(sys.argv[2])
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def rejected(f):
        def call():
            try:
                f()
            except (ValueError, TypeError):
                return
            raise AssertionError("the call was expected to be rejected")
        return call

    cases = {}
    for dt in (np.float64, np.float32):
        name = np.dtype(dt).name
        net = cbackprop.Network([4, 3, 2], dtype=dt, seed=0)
        rng = np.random.default_rng(0)
        X, Y = rng.random((2, 4)).astype(dt), rng.random((2, 2)).astype(dt)
        Xo = X.astype(np.float32 if dt == np.float64 else np.float64)  # the other dtype: converted
        lab = np.array([0, 1])
        bad = rng.random((2, 5))
        cases.update({
            f"{name} feedforward": lambda net=net, X=X: net.feedforward(X),
            f"{name} backprop": lambda net=net, X=X, Y=Y: net.backprop(X, Y),
            f"{name} cost": lambda net=net, X=X, Y=Y: net.cost(X, Y),
            f"{name} update_mini_batch": lambda net=net, X=X, Y=Y: net.update_mini_batch(X, Y, 0.01),
            f"{name} update_mini_batch (converting path)":
                lambda net=net, X=Xo, Y=Y: net.update_mini_batch(X, Y, 0.01),
            f"{name} evaluate": lambda net=net, X=X, lab=lab: net.evaluate(X, lab),
            f"{name} sgd": lambda net=net, X=X, Y=Y: net.sgd(X, Y, 1, 2, 0.01),
            f"{name} sgd with test_data": lambda net=net, X=X, Y=Y, lab=lab: net.sgd(X, Y, 1, 1, 0.01,
                                                                                    test_data=(X, lab)),
            f"{name} weights setter": lambda net=net: setattr(net, "weights", net.weights),
            f"{name} rejected feedforward": rejected(lambda net=net, bad=bad: net.feedforward(bad)),
            f"{name} rejected update_mini_batch": rejected(lambda net=net, X=X, Y=Y: net.update_mini_batch(X, Y, -1.0)),
            f"{name} rejected sgd": rejected(lambda net=net, X=X, Y=Y: net.sgd(X, Y, 0, 1, 0.1)),
        })
    cases["constructor"] = lambda: cbackprop.Network([4, 3, 2], seed=1)

    only = sys.argv[3:]
    results = {}
    for name, f in cases.items():
        if only and name not in only:
            continue
        for _ in range(WARMUP):
            f()
        gc.collect()
        r0 = rss()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            f()
        seconds = time.perf_counter() - t0
        gc.collect()
        results[name] = dict(growth=rss() - r0, calls=CALLS, seconds=round(seconds, 2))
    print("LEAKS " + json.dumps(results))
''')


def _measure(tmp_path, *only):
    script = tmp_path / "leaks.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(CALLS), str(WARMUP), *only],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"returncode={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    line = [l for l in proc.stdout.splitlines() if l.startswith("LEAKS ")]
    assert len(line) == 1, proc.stdout[-2000:]
    return json.loads(line[0][len("LEAKS "):])


@pytest.mark.skipif(_UNDER_ASAN, reason="RSS is meaningless under AddressSanitizer (quarantine)")
def test_rss_grows_less_than_1_mib_over_100000_calls_of_each_method(tmp_path):
    results = _measure(tmp_path)
    assert len(results) == 25
    for name, r in results.items():
        print(f"{name}: {r['calls']} calls in {r['seconds']} s, RSS growth {r['growth'] / 1024:.0f} KiB")
    leaky = {name: r for name, r in results.items() if r["growth"] >= LIMIT}
    assert not leaky, f"RSS grew by >= 1 MiB over {CALLS} calls: {leaky}"
