# cython: language_level=3, boundscheck=False, cdivision=True
"""Cython layer over the C kernels in csrc/.

`Engine` owns one network's parameter blob, gradient blob and workspace (NumPy arrays
allocated once per network and mini-batch capacity) and calls the kernels with the GIL
released.  It trusts its arguments: `cbackprop.network.Network` validates them first
(C-contiguous arrays of the engine's dtype with the right shapes, finite values).
"""
import threading
import time

import numpy as np

from ._autothreads import AutoThreads, FEEDER, TEAM
from ._common import check_int
from libc.math cimport isfinite

cdef extern from "cbackprop.h" nogil:
    ctypedef struct cbp_epoch_stats:
        size_t fed
        int stopped
        int split
    ctypedef struct cbp_net_s:
        size_t n_layers
        const size_t *sizes
        float *params
        float *grads
        float *z
        float *a
        float *delta
        float *y
        size_t m_cap
        float *velocity
        const int *act
        int cost
        int isa
        int n_threads
        double start_wait
        double slow_wait
        float *feed
        size_t feed_rows
        int feeder
        float *split
        size_t split_rows
        int split_threads
    ctypedef struct cbp_hyper_s:
        float eta
        float keep
        float decay
        float mu
    ctypedef struct cbp_net_d:
        size_t n_layers
        const size_t *sizes
        double *params
        double *grads
        double *z
        double *a
        double *delta
        double *y
        size_t m_cap
        double *velocity
        const int *act
        int cost
        int isa
        int n_threads
        double start_wait
        double slow_wait
        double *feed
        size_t feed_rows
        int feeder
        double *split
        size_t split_rows
        int split_threads
    ctypedef struct cbp_hyper_d:
        double eta
        double keep
        double decay
        double mu

    void cbp_net_predict_s(const cbp_net_s *net, const float *x, size_t m, float *out)
    void cbp_net_predict_d(const cbp_net_d *net, const double *x, size_t m, double *out)
    void cbp_net_backprop_s(const cbp_net_s *net, const float *x, const float *y, size_t m,
                            float scale)
    void cbp_net_backprop_d(const cbp_net_d *net, const double *x, const double *y, size_t m,
                            double scale)
    void cbp_net_apply_gradient_s(const cbp_net_s *net, cbp_hyper_s h)
    void cbp_net_apply_gradient_d(const cbp_net_d *net, cbp_hyper_d h)
    void cbp_net_sgd_step_s(const cbp_net_s *net, const float *x, const float *y, size_t m,
                            cbp_hyper_s h)
    void cbp_net_sgd_step_d(const cbp_net_d *net, const double *x, const double *y, size_t m,
                            cbp_hyper_d h)
    int cbp_net_sgd_epoch_s(const cbp_net_s *net, const float *x, const float *y,
                            const long long *perm, size_t n, size_t mbs, cbp_hyper_s h,
                            cbp_epoch_stats *stats)
    int cbp_net_sgd_epoch_d(const cbp_net_d *net, const double *x, const double *y,
                            const long long *perm, size_t n, size_t mbs, cbp_hyper_d h,
                            cbp_epoch_stats *stats)
    size_t cbp_split_len_s(const cbp_net_s *net, size_t rows, int T)
    size_t cbp_split_len_d(const cbp_net_d *net, size_t rows, int T)
    int cbp_all_finite_s(const float *x, size_t n)
    int cbp_all_finite_d(const double *x, size_t n)
    int cbp_isa_supported(int isa)
    int cbp_isa_best()
    double cbp_fma_loop_s(int isa, size_t iters)
    double cbp_fma_loop_d(int isa, size_t iters)

#: Kernel variants, index = the C enum CBP_ISA_*.
KERNELS = ("plain", "generic", "avx2", "avx512")


def kernels_supported():
    """The kernel variants this build and CPU can run, slowest first."""
    return tuple(name for i, name in enumerate(KERNELS) if cbp_isa_supported(i))


def best_kernels():
    """The variant new networks use: CBACKPROP_KERNELS from the environment when set,
    else the fastest supported one."""
    import os
    want = os.environ.get("CBACKPROP_KERNELS", "")
    if want:
        if want not in kernels_supported():
            raise ValueError(f"CBACKPROP_KERNELS must be one of {kernels_supported()} on this "
                             f"machine, got {want!r}")
        return want
    return KERNELS[cbp_isa_best()]


#: Flops per mini-batch from which an epoch uses every usable core by default (measured
#: on a 2-core VM, float32, 2 threads against 1: [784,256,256,10] at 32, 3.4e7, 1.83x
#: (float64 1.34x); [784,1024,1024,10] at 128, 9.5e8, 1.97x).  Below, see
#: AUTO_PROBE_MIN_FLOPS.  (Before the hidden split, the per-phase team of two threads was
#: 0.58x on [784,30,10] at 10 and 0.76x on [784,100,10] at 10.)
AUTO_THREADS_MIN_FLOPS = 20_000_000

#: Flops per mini-batch from which an automatic epoch below AUTO_THREADS_MIN_FLOPS runs
#: either on two threads or on one with the feeder, whichever measured faster
#: (_autothreads.py), when the hidden split applies on two threads; otherwise, and below,
#: one thread (with the feeder): the per-phase team lost to the feeder in every measurement
#: in this range (float32 [784,30,10] at 10: 0.080 s against 0.027 s; at 100: 0.044 against
#: 0.034).  Measured on a 2-core VM while both vCPUs ran, the split's epoch time against the
#: feeder's: float64 [784,30,10] at 10 (9.5e5 flops) 0.048 s against 0.055 s; [784,100,10]
#: at 10 (3.2e6) 0.108 against 0.175 (float32 0.060 against 0.085); float64 [784,30,10] at
#: 100 (9.5e6) 0.046 against 0.055.
AUTO_PROBE_MIN_FLOPS = 500_000

#: Flops per epoch from which a one-thread epoch (automatic thread count) uses a feeder
#: thread on a second core to gather the mini-batches (thread creation and join take tens
#: of microseconds; 5e7 flops take about 0.3 ms here).
FEEDER_MIN_FLOPS = 50_000_000


def usable_cores():
    """CPUs this process may run on (its affinity mask), at most 64."""
    import os
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(64, n))


def default_num_threads():
    """Threads an epoch of sgd may use unless set per network: CBACKPROP_NUM_THREADS from
    the environment, else 0, meaning automatic: every usable core for networks of at least
    AUTO_THREADS_MIN_FLOPS per mini-batch; from AUTO_PROBE_MIN_FLOPS, where the hidden split
    applies, two threads or one with the feeder, whichever measured faster; one thread (with
    the feeder) otherwise."""
    import os
    want = os.environ.get("CBACKPROP_NUM_THREADS", "")
    if want:
        if not want.isdigit() or not 1 <= int(want) <= 64:
            raise ValueError(f"CBACKPROP_NUM_THREADS must be an integer in [1, 64], got {want!r}")
        return int(want)
    return 0


def fma_loop(dtype, kernels, size_t iters):
    """Run the multiply-add ceiling loop of a kernel variant (GIL released); returns the
    number of floating-point operations it performed: 24 * lanes * iters."""
    cdef int isa = KERNELS.index(kernels)
    cdef double r
    cdef size_t vbytes = {"plain": 16, "generic": 16, "avx2": 32, "avx512": 64}[kernels]
    if np.dtype(dtype) == np.float32:
        with nogil:
            r = cbp_fma_loop_s(isa, iters)
        lanes = vbytes // 4
    else:
        with nogil:
            r = cbp_fma_loop_d(isa, iters)
        lanes = vbytes // 8
    if r != r:
        raise RuntimeError("fma loop produced NaN")
    return 24.0 * lanes * iters


def all_finite(arr):
    """True when every value of a C-contiguous, aligned float32/float64 array is finite."""
    cdef const float[::1] fs
    cdef const double[::1] fd
    cdef int ok
    flat = arr.reshape(-1)
    if flat.shape[0] == 0:
        return True
    if flat.dtype == np.float32:
        fs = flat
        with nogil:
            ok = cbp_all_finite_s(&fs[0], fs.shape[0])
    else:
        fd = flat
        with nogil:
            ok = cbp_all_finite_d(&fd[0], fd.shape[0])
    return ok != 0


CACHE_LINE = 64


def _aligned_zeros(n, dtype):
    """A zeroed 1-D array of n values whose data starts on a 64-byte boundary (NumPy only
    promises 16): the kernels' 64-byte vector loads of rows then do not straddle two cache
    lines (measured: N1 float32 epoch 0.063 -> 0.055 s of CPU time).  64 is CBP_VEC_ALIGN
    in csrc/kernels.c, the widest vector (AVX-512) and a cache line."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + CACHE_LINE, dtype=np.uint8)
    start = (-raw.ctypes.data) % CACHE_LINE
    return raw[start:start + n * dtype.itemsize].view(dtype)


cdef inline cbp_hyper_s _hyper_s(double eta, double keep, double decay, double mu) noexcept nogil:
    cdef cbp_hyper_s h
    h.eta = <float>eta
    h.keep = <float>keep
    h.decay = <float>decay
    h.mu = <float>mu
    return h


cdef inline cbp_hyper_d _hyper_d(double eta, double keep, double decay, double mu) noexcept nogil:
    cdef cbp_hyper_d h
    h.eta = eta
    h.keep = keep
    h.decay = decay
    h.mu = mu
    return h


cdef class Engine:
    """Parameter blob, gradient blob and workspace of one network, and the C calls on them."""
    cdef cbp_net_s ns
    cdef cbp_net_d nd
    cdef bint is_double
    cdef readonly object dtype
    cdef readonly object params       # [n_params] parameter blob
    cdef readonly object grads        # [n_params] gradient blob, same layout
    cdef readonly Py_ssize_t m_cap    # rows the workspace holds
    cdef readonly object sizes
    cdef object _sizes_arr            # [L+1] size_t copy of sizes for C
    cdef object _z, _a, _delta, _y    # workspace arrays (kept alive here)
    cdef object _feed                 # [rows * (n_0 + n_L)] the feeder's second buffers
                                      # (allocated by the first epoch that uses a feeder)
    cdef object _split                # the hidden-split epoch's blocks (cbp_split_len;
                                      # allocated by the first epoch that uses the split)
    cdef size_t _split_rows           # rows and threads _split was laid out for
    cdef int _split_threads
    cdef readonly object velocity     # [n_params] momentum velocity (None until first used)
    cdef readonly object accum        # [n_params] accumulated gradient sum (None until used)
    cdef object _act_arr              # [L+1] C int activation codes (index 0 unused)
    cdef int[::1] _act_mv
    cdef size_t[::1] _sizes_mv
    cdef readonly object lock         # serialises calls on this engine (threading.Lock)
    cdef Py_ssize_t n_in, n_out
    cdef size_t n_params
    cdef double eta_min, eta_max      # normal range of eta in the engine dtype
    cdef readonly int last_epoch_threads  # threads that finished the last sgd epoch
    cdef readonly Py_ssize_t last_epoch_fed  # its mini-batches gathered by the feeder thread
    cdef readonly bint last_epoch_feeder_stopped  # the trainer stopped the feeder (too slow)
    cdef readonly bint last_epoch_split  # the last sgd epoch ran the hidden split
    cdef readonly object auto_threads  # AutoThreads: the measured automatic choice
    cdef int _num_threads             # threads for sgd_epoch (see num_threads; the C
                                      # field n_threads is set per epoch from it)

    def __cinit__(self, sizes, dtype, act=None, int cost=0):
        """act: the CBP_ACT_* code of layers 1..L (default sigmoid); cost: CBP_COST_*."""
        self.dtype = np.dtype(dtype)
        self.is_double = self.dtype == np.float64
        self.sizes = tuple(int(n) for n in sizes)
        self._sizes_arr = np.array(self.sizes, dtype=np.uintp)
        self._sizes_mv = self._sizes_arr
        n_params = sum(self.sizes[l] * (self.sizes[l - 1] + 1) for l in range(1, len(self.sizes)))
        self.params = _aligned_zeros(n_params, self.dtype)
        self.n_params = n_params
        self.grads = _aligned_zeros(n_params, self.dtype)
        self.velocity = None
        self.accum = None
        L = len(self.sizes) - 1
        self._act_arr = np.array([0] + list(act if act is not None else [0] * L), dtype=np.intc)
        self._act_mv = self._act_arr
        self.nd.act = self.ns.act = &self._act_mv[0]
        self.nd.cost = self.ns.cost = cost
        self.nd.velocity = NULL
        self.ns.velocity = NULL
        self.m_cap = 0
        self._set_struct()
        self.kernels = best_kernels()
        self.lock = threading.Lock()
        self._num_threads = default_num_threads()     # 0: automatic
        self.auto_threads = AutoThreads()
        self.n_in = self.sizes[0]
        self.n_out = self.sizes[-1]
        self.eta_min = float(np.finfo(self.dtype).tiny)
        self.eta_max = float(np.finfo(self.dtype).max)

    @property
    def kernels(self):
        """The kernel variant this engine runs (one of kernels_supported())."""
        return KERNELS[self.nd.isa if self.is_double else self.ns.isa]

    @property
    def thread_waits(self):
        """(start_wait, slow_wait) in seconds for the threads of sgd_epoch: how long an epoch
        waits for its threads to start, and how long one barrier wait (or one wait for the
        feeder thread's mini-batch) may last, before it finishes on one thread (without the
        feeder); 0 means the default (2% of the epoch's work within 1-20 ms, and 5 ms).  For
        tests on busy or instrumented machines (sanitizers), where the defaults make every
        epoch fall back; a slow_wait below 1 us (not 0) counts every barrier wait as slow,
        which tests the fallback."""
        return self.nd.start_wait, self.nd.slow_wait

    @thread_waits.setter
    def thread_waits(self, waits):
        start, slow = (float(w) for w in waits)
        if not (0 <= start <= 10 and 0 <= slow <= 10):
            raise ValueError(f"thread_waits must be two numbers of seconds in [0, 10], got {waits!r}")
        self.nd.start_wait = self.ns.start_wait = start
        self.nd.slow_wait = self.ns.slow_wait = slow

    @property
    def num_threads(self):
        """Threads one epoch of sgd may run on (other calls run on the calling thread).
        When not set (automatic), every usable core for networks of at least
        AUTO_THREADS_MIN_FLOPS per mini-batch; from AUTO_PROBE_MIN_FLOPS, where the hidden
        split applies, two threads or one (auto_threads: whichever measured faster); one
        below (plus the feeder thread on a second core for epochs of at least
        FEEDER_MIN_FLOPS, whenever one thread trains); when set, that many for
        networks of at least 2e5 flops per mini-batch, and no feeder.  Reads as the number
        of threads a large epoch would use."""
        return self._num_threads if self._num_threads else usable_cores()

    @property
    def num_threads_automatic(self):
        """True while num_threads was not set (nor CBACKPROP_NUM_THREADS)."""
        return self._num_threads == 0

    @num_threads.setter
    def num_threads(self, n):
        n = check_int(n, "num_threads", 1)      # (Network.num_threads delegates here)
        if n > 64:
            raise ValueError(f"num_threads must be an integer in [1, 64], got {n}")
        self._num_threads = n

    @kernels.setter
    def kernels(self, name):
        if name not in kernels_supported():
            raise ValueError(f"kernels must be one of {kernels_supported()} on this machine, got {name!r}")
        self.nd.isa = self.ns.isa = KERNELS.index(name)

    cdef _set_struct(self):
        cdef float[::1] ps, gs, zs, as_, ds, ys, fs
        cdef double[::1] pd, gd, zd, ad, dd, yd, fd
        cdef size_t L = len(self.sizes) - 1
        if self.is_double:
            self.nd.n_layers = L
            self.nd.sizes = &self._sizes_mv[0]
            pd = self.params
            gd = self.grads
            self.nd.params = &pd[0]
            self.nd.grads = &gd[0]
            self.nd.m_cap = self.m_cap
            if self.m_cap > 0:
                zd = self._z
                ad = self._a
                dd = self._delta
                yd = self._y
                self.nd.z = &zd[0]
                self.nd.a = &ad[0]
                self.nd.delta = &dd[0]
                self.nd.y = &yd[0]
        else:
            self.ns.n_layers = L
            self.ns.sizes = &self._sizes_mv[0]
            ps = self.params
            gs = self.grads
            self.ns.params = &ps[0]
            self.ns.grads = &gs[0]
            self.ns.m_cap = self.m_cap
            if self.m_cap > 0:
                zs = self._z
                as_ = self._a
                ds = self._delta
                ys = self._y
                self.ns.z = &zs[0]
                self.ns.a = &as_[0]
                self.ns.delta = &ds[0]
                self.ns.y = &ys[0]
        if self._split is not None:
            if self.is_double:
                fd = self._split
                self.nd.split = &fd[0]
                self.nd.split_rows = self._split_rows
                self.nd.split_threads = self._split_threads
            else:
                fs = self._split
                self.ns.split = &fs[0]
                self.ns.split_rows = self._split_rows
                self.ns.split_threads = self._split_threads
        if self._feed is not None:
            rows = self._feed.shape[0] // (self.sizes[0] + self.sizes[-1])
            if self.is_double:
                fd = self._feed
                self.nd.feed = &fd[0]
                self.nd.feed_rows = rows
            else:
                fs = self._feed
                self.ns.feed = &fs[0]
                self.ns.feed_rows = rows

    def reserve(self, Py_ssize_t m):
        """Make the workspace hold at least m rows (allocates only when it grows)."""
        if m <= self.m_cap:
            return
        s = self.sizes
        self._z = _aligned_zeros(m * sum(s[1:]), self.dtype)
        self._a = _aligned_zeros(m * sum(s), self.dtype)
        self._delta = _aligned_zeros(m * sum(s[1:]), self.dtype)
        self._y = _aligned_zeros(m * s[-1], self.dtype)
        self.m_cap = m
        self._set_struct()

    cdef size_t _split_len(self, size_t rows, int threads):
        """Elements of the hidden split's blocks for this network (cbp_split_len; 0: the
        split does not apply with this many threads)."""
        return (cbp_split_len_d(&self.nd, rows, threads) if self.is_double
                else cbp_split_len_s(&self.ns, rows, threads))

    def workspace_nbytes(self):
        """Bytes held by the workspace (z, a, delta and gathered-target blocks, the
        feeder's second input and target blocks, and the hidden split's blocks)."""
        if self.m_cap == 0:
            return 0
        return (self._z.nbytes + self._a.nbytes + self._delta.nbytes + self._y.nbytes
                + (self._feed.nbytes if self._feed is not None else 0)
                + (self._split.nbytes if self._split is not None else 0))

    def predict(self, x):
        """a^L for all rows of x ([m, n_0], C-contiguous, engine dtype; m >= 1), computed
        m_cap rows at a time (reserve first); returns a new [m, n_L] array."""
        cdef const float[:, ::1] xs
        cdef const double[:, ::1] xd
        cdef float[:, ::1] os
        cdef double[:, ::1] od
        cdef size_t m = x.shape[0]
        out = np.empty((m, self.sizes[-1]), dtype=self.dtype)
        if self.is_double:
            xd = x
            od = out
            with nogil:
                cbp_net_predict_d(&self.nd, &xd[0, 0], m, &od[0, 0])
        else:
            xs = x
            os = out
            with nogil:
                cbp_net_predict_s(&self.ns, &xs[0, 0], m, &os[0, 0])
        return out

    def ensure_velocity(self):
        """Allocate the momentum velocity (zeros, same layout as params) if not yet there."""
        cdef float[::1] vs
        cdef double[::1] vd
        if self.velocity is None:
            self.velocity = _aligned_zeros(self.n_params, self.dtype)
            if self.is_double:
                vd = self.velocity
                self.nd.velocity = &vd[0]
            else:
                vs = self.velocity
                self.ns.velocity = &vs[0]

    cdef _point_grads(self, arr):
        """Make the C struct's gradient blob pointer point at arr ([n_params])."""
        cdef float[::1] gs
        cdef double[::1] gd
        if self.is_double:
            gd = arr
            self.nd.grads = &gd[0]
        else:
            gs = arr
            self.ns.grads = &gs[0]

    def accumulate_alloc(self):
        """Allocate accum (zeros) if not yet there."""
        if self.accum is None:
            self.accum = _aligned_zeros(self.n_params, self.dtype)

    def accumulate(self, x, y):
        """accum += the summed gradient of the m rows of x, y (m <= m_cap); the gradient
        blob `grads` is not touched."""
        self.accumulate_alloc()
        self._point_grads(self.accum)
        try:
            self.backprop(x, y, 1.0, accumulate=True)
        finally:
            self._point_grads(self.grads)

    def apply_accumulated(self, double eta, double keep=1.0, double decay=0.0, double mu=0.0):
        """One update with g = accum (eta already divided by the sample count)."""
        self.accumulate_alloc()
        self._point_grads(self.accum)
        try:
            self.apply_gradient(eta, keep, decay, mu)
        finally:
            self._point_grads(self.grads)

    def layer_views(self, Py_ssize_t m):
        """(z, a, delta): lists of [m, n_l] views of the workspace blocks of layers 1..L
        (a also has a^0 first, the gathered input of sgd epochs); m <= m_cap."""
        s = self.sizes
        zs, as_, ds = [], [], []
        off = 0
        for l in range(1, len(s)):
            zs.append(self._z[self.m_cap * off:self.m_cap * off + m * s[l]].reshape(m, s[l]))
            ds.append(self._delta[self.m_cap * off:self.m_cap * off + m * s[l]].reshape(m, s[l]))
            off += s[l]
        off = 0
        for l in range(len(s)):
            as_.append(self._a[self.m_cap * off:self.m_cap * off + m * s[l]].reshape(m, s[l]))
            off += s[l]
        return zs, as_, ds

    def backprop(self, x, y, double scale, bint accumulate=False):
        """grads (+)= the gradient of scale * sum_x C_x over the m rows of x, y (m <= m_cap);
        scale 1/m gives the batch average.  accumulate=False zeroes grads first."""
        cdef const float[:, ::1] xs, ys
        cdef const double[:, ::1] xd, yd
        cdef size_t m = x.shape[0]
        if not accumulate:
            self.grads.fill(0)
        if self.is_double:
            xd = x
            yd = y
            with nogil:
                cbp_net_backprop_d(&self.nd, &xd[0, 0], &yd[0, 0], m, scale)
        else:
            xs = x
            ys = y
            with nogil:
                cbp_net_backprop_s(&self.ns, &xs[0, 0], &ys[0, 0], m, <float>scale)

    def apply_gradient(self, double eta, double keep=1.0, double decay=0.0, double mu=0.0):
        """One update from the gradient blob (see cbp_hyper in csrc/cbackprop_decl.h)."""
        if mu != 0:
            self.ensure_velocity()
        if self.is_double:
            with nogil:
                cbp_net_apply_gradient_d(&self.nd, _hyper_d(eta, keep, decay, mu))
        else:
            with nogil:
                cbp_net_apply_gradient_s(&self.ns, _hyper_s(eta, keep, decay, mu))

    def sgd_step(self, x, y, double eta, double keep=1.0, double decay=0.0, double mu=0.0):
        """One update_mini_batch on the m rows of x, y (m <= m_cap)."""
        cdef const float[:, ::1] xs, ys
        cdef const double[:, ::1] xd, yd
        cdef size_t m = x.shape[0]
        if mu != 0:
            self.ensure_velocity()
        if self.is_double:
            xd = x
            yd = y
            with nogil:
                cbp_net_sgd_step_d(&self.nd, &xd[0, 0], &yd[0, 0], m, _hyper_d(eta, keep, decay, mu))
        else:
            xs = x
            ys = y
            with nogil:
                cbp_net_sgd_step_s(&self.ns, &xs[0, 0], &ys[0, 0], m, _hyper_s(eta, keep, decay, mu))

    def try_step(self, x, y, eta):
        """update_mini_batch's fast path: when x and y are C-contiguous 2-D arrays of the
        engine dtype with matching shapes, finite values and no overlap with the parameter
        buffer, and eta is a finite float > 0, run the step and return True.  Return False
        (changing nothing) for anything else: the caller then takes the general path,
        which converts what it can and names what is wrong."""
        cdef const float[:, ::1] xs, ys
        cdef const double[:, ::1] xd, yd
        cdef double e
        cdef size_t m
        cdef const char *lo
        cdef const char *hi
        cdef const char *p
        if type(eta) is not float or type(x) is not np.ndarray or type(y) is not np.ndarray:
            return False
        e = eta
        if not (e >= self.eta_min and e <= self.eta_max):
            return False
        try:
            if self.is_double:
                xd = x
                yd = y
            else:
                xs = x
                ys = y
        except (ValueError, TypeError):
            return False
        if self.is_double:
            m = xd.shape[0]
            if m == 0 or xd.shape[1] != self.n_in or yd.shape[0] != m or yd.shape[1] != self.n_out:
                return False
            if (<size_t>&xd[0, 0]) % 8 or (<size_t>&yd[0, 0]) % 8:  # unaligned: general path copies
                return False
            lo = <const char *>self.nd.params
            hi = lo + self.n_params * 8
            p = <const char *>&xd[0, 0]
            if p < hi and p + m * self.n_in * 8 > lo:
                return False
            p = <const char *>&yd[0, 0]
            if p < hi and p + m * self.n_out * 8 > lo:
                return False
            if not (cbp_all_finite_d(&xd[0, 0], m * self.n_in) and cbp_all_finite_d(&yd[0, 0], m * self.n_out)):
                return False
        else:
            m = xs.shape[0]
            if m == 0 or xs.shape[1] != self.n_in or ys.shape[0] != m or ys.shape[1] != self.n_out:
                return False
            if (<size_t>&xs[0, 0]) % 4 or (<size_t>&ys[0, 0]) % 4:
                return False
            lo = <const char *>self.ns.params
            hi = lo + self.n_params * 4
            p = <const char *>&xs[0, 0]
            if p < hi and p + m * self.n_in * 4 > lo:
                return False
            p = <const char *>&ys[0, 0]
            if p < hi and p + m * self.n_out * 4 > lo:
                return False
            if not (cbp_all_finite_s(&xs[0, 0], m * self.n_in) and cbp_all_finite_s(&ys[0, 0], m * self.n_out)):
                return False
        with self.lock:
            if <Py_ssize_t>m > self.m_cap:
                self.reserve(m)
            if self.is_double:
                with nogil:
                    cbp_net_sgd_step_d(&self.nd, &xd[0, 0], &yd[0, 0], m, _hyper_d(e, 1.0, 0.0, 0.0))
            else:
                with nogil:
                    cbp_net_sgd_step_s(&self.ns, &xs[0, 0], &ys[0, 0], m, _hyper_s(e, 1.0, 0.0, 0.0))
        return True

    def sgd_epoch(self, x, y, perm, Py_ssize_t mini_batch_size, double eta, double keep=1.0,
                  double decay=0.0, double mu=0.0):
        """One epoch of mini-batch SGD over x, y in the row order perm (int64, [n]);
        mini_batch_size <= m_cap."""
        cdef const float[:, ::1] xs, ys
        cdef const double[:, ::1] xd, yd
        if not 1 <= mini_batch_size <= self.m_cap:
            raise ValueError(f"mini_batch_size must be in [1, m_cap = {self.m_cap}] (reserve "
                             f"first), got {mini_batch_size}")
        cdef const long long[::1] p = perm
        cdef size_t n = p.shape[0]
        cdef size_t mbs = mini_batch_size
        self.last_epoch_fed = 0
        self.last_epoch_feeder_stopped = False
        self.last_epoch_split = False
        if n == 0:
            return
        if mu != 0:
            self.ensure_velocity()
        # Automatic: every usable core from AUTO_THREADS_MIN_FLOPS per mini-batch; from
        # AUTO_PROBE_MIN_FLOPS, two threads or one with the feeder, whichever measured
        # faster (_autothreads.py); below, one.  Set by the user: that many threads from 2e5
        # flops per mini-batch (below, the barriers cost more than the work: [20,10,5], 1e4
        # flops, 0.86x; [5,9,3], 2e3 flops, 0.12x).  Every epoch tries its threads again: a
        # failed attempt (a partner thread that does not start in time, or one slow
        # barrier) costs at most a few milliseconds, after which the epoch finishes on this
        # thread.
        cdef int finished
        cdef cbp_epoch_stats stats
        s = self.sizes
        flops = 4 * mbs * sum(s[l] * s[l - 1] for l in range(1, len(s)))
        two_cores = usable_cores() >= 2
        way = None
        if self._num_threads:
            threads = self._num_threads if flops >= 200_000 else 1
        else:
            threads = usable_cores() if flops >= AUTO_THREADS_MIN_FLOPS else 1
            if (threads == 1 and flops >= AUTO_PROBE_MIN_FLOPS and two_cores
                    and self._split_len(mbs, 2)):
                way = self.auto_threads.choose((mbs, n))
                threads = 2 if way == TEAM else 1
        self.nd.n_threads = self.ns.n_threads = threads
        # Automatic, one training thread and a second usable core: the feeder thread
        # gathers the next mini-batches there (see cbp_net_sgd_epoch), for epochs of at
        # least FEEDER_MIN_FLOPS (below, creating the thread costs more than it saves).
        can_feed = not self._num_threads and flops * n >= FEEDER_MIN_FLOPS * mbs and two_cores
        feeder = can_feed and threads == 1
        self.nd.feeder = self.ns.feeder = feeder
        # Buffers (allocated once, by the first epoch that may use them; an epoch that
        # chooses between the two ways allocates both, so that later ones allocate
        # nothing): the feeder's second input and target blocks, and the hidden split's
        # blocks (cbp_split_len: 0 when the split does not apply to this network and
        # thread count).
        if (feeder or (way is not None and can_feed)) and (
                self._feed is None or self._feed.shape[0] < mbs * (s[0] + s[-1])):
            self._feed = _aligned_zeros(mbs * (s[0] + s[-1]), self.dtype)
            self._set_struct()
        split_threads = 2 if way is not None else threads
        if self._split_len(mbs, split_threads) and (
                self._split is None or self._split_rows < mbs
                or self._split_threads < split_threads):
            # (laid out for this thread count: whether the split applies depends on it and
            # on the kernels, so a larger count from before may not have a layout)
            rows = max(mbs, self._split_rows)
            self._split = _aligned_zeros(self._split_len(rows, split_threads), self.dtype)
            self._split_rows, self._split_threads = rows, split_threads
            self._set_struct()
        started = time.perf_counter()
        if self.is_double:
            xd = x
            yd = y
            with nogil:
                finished = cbp_net_sgd_epoch_d(&self.nd, &xd[0, 0], &yd[0, 0], &p[0], n, mbs,
                                               _hyper_d(eta, keep, decay, mu), &stats)
        else:
            xs = x
            ys = y
            with nogil:
                finished = cbp_net_sgd_epoch_s(&self.ns, &xs[0, 0], &ys[0, 0], &p[0], n, mbs,
                                               _hyper_s(eta, keep, decay, mu), &stats)
        self.last_epoch_threads = finished
        self.last_epoch_fed = stats.fed
        self.last_epoch_feeder_stopped = stats.stopped
        self.last_epoch_split = stats.split
        if way is not None:
            self.auto_threads.record((mbs, n), way, time.perf_counter() - started, n)
