# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython layer over the C engine in csrc/ (cbackprop.h).

`Engine` owns one network's parameter blob, gradient blob, optimizer state and workspace
(NumPy arrays allocated by Python, aligned to 64 bytes) and calls the engine with the GIL
released.  It holds no policy: the C engine decides threads (cbp_epoch_plan).  It trusts
its arguments: `cbackprop.network.Network` validates them first (C-contiguous arrays of the
engine's dtype with the right shapes, finite values); only `try_step`, the fast path of
update_mini_batch, checks its own.
"""
import os
import threading
import weakref

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t, uint32_t, uint64_t
from cpython.exc cimport PyErr_CheckSignals
from libc.string cimport memcpy

from ._validation import check_int

cnp.import_array()

cdef extern from "cbackprop.h" nogil:
    enum:
        CBP_F32
        CBP_F64
        CBP_OPT_SGD
        CBP_OPT_MOMENTUM
        CBP_OPT_NESTEROV
        CBP_OPT_ADAM
    ctypedef struct cbp_update:
        int kind
        double eta
        double decay
        double mu
        double beta1
        double beta2
        double eps
        double t
        uint64_t round
        void *save
    ctypedef struct cbp_net:
        int dtype
        int isa
        size_t n_layers
        const size_t *sizes
        const int *act
        int cost
        void *params
        void *velocity
        void *moment2
        void *work
        size_t m_cap
        int n_threads
        int plan
        double far_ns
        const double *dropout
        uint64_t seed
    ctypedef int (*cbp_poll_fn)(void *arg) noexcept
    ctypedef struct cbp_epoch_data:
        const void *x
        const void *y
        const int64_t *labels
        const int64_t *perm
        size_t n
        size_t mini_batch_size
        double poll_seconds
    ctypedef struct cbp_epoch_result:
        size_t batches
        int threads

    enum:
        CBP_WS_A
        CBP_WS_Z
        CBP_WS_DELTA
        CBP_WS_KEEP
        CBP_WS_DROPPED
    uint32_t cbp_dropout_bits(uint64_t seed, uint64_t round, uint64_t batch, uint64_t layer,
                              uint64_t row, uint64_t unit)
    void cbp_philox4x32(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2])
    int cbp_isa_supported(int isa)
    int cbp_isa_best()
    size_t cbp_n_params(const size_t *sizes, size_t n_layers)
    size_t cbp_workspace_len(const cbp_net *net, size_t m_cap)
    size_t cbp_workspace_offset(const cbp_net *net, int which, size_t l)
    size_t cbp_workspace_ld(const cbp_net *net, size_t l)
    void cbp_net_forward(const cbp_net *net, void *out, const void *x, size_t m)
    void cbp_net_backprop(const cbp_net *net, void *grads, const void *x, const void *y,
                          size_t m, double scale)
    void cbp_net_update(const cbp_net *net, const void *g, double scale, const cbp_update *u)
    void cbp_net_step(const cbp_net *net, const void *x, const void *y, size_t m,
                      const cbp_update *u)
    cbp_epoch_result cbp_net_epoch(const cbp_net *net, const cbp_epoch_data *data,
                                   const cbp_update *u, cbp_poll_fn poll, void *poll_arg)
    ctypedef struct cbp_plan:
        int kind
        int threads
    cbp_plan cbp_epoch_plan(const cbp_net *net, size_t m)
    int cbp_epoch_threads(const cbp_net *net, size_t m)
    int cbp_usable_cores()
    double cbp_round_trip_ns()
    int cbp_all_finite(int dtype, int isa, const void *x, size_t n)
    double cbp_fma_loop(int dtype, int isa, size_t iters)

#: How an epoch runs, index = the C enum CBP_PLAN_*: on the calling thread; with a second
#: thread gathering the next mini-batch; as the hidden split; as phases of tasks.
PLANS = ("alone", "feed", "split", "tasks")

#: Kernel variants, index = the C enum CBP_ISA_*.
KERNELS = ("plain", "generic", "avx2", "avx512")
CACHE_LINE = 64


def kernels_supported():
    """The kernel variants this build and CPU can run, slowest first."""
    return tuple(name for i, name in enumerate(KERNELS) if cbp_isa_supported(i))


def best_kernels():
    """The variant new networks use: CBACKPROP_KERNELS from the environment when set, else
    the fastest supported one."""
    want = os.environ.get("CBACKPROP_KERNELS", "")
    if want:
        if want not in kernels_supported():
            raise ValueError(f"CBACKPROP_KERNELS must be one of {kernels_supported()} on this "
                             f"machine, got {want!r}")
        return want
    return KERNELS[cbp_isa_best()]


def usable_cores():
    """CPUs this process may run on (its affinity mask), at most 64."""
    return cbp_usable_cores()


def round_trip_ns():
    """A cache line's round trip between this thread and a second one, in nanoseconds
    (cbp_round_trip_ns; 1e9 when no second thread answered within 2 ms).  The automatic
    thread policy runs small epochs alone while it is above 150 ns (cbp_epoch_plan_now)."""
    cdef double r
    with nogil:
        r = cbp_round_trip_ns()
    return r


def default_num_threads():
    """Threads an epoch of sgd may use unless set per network: CBACKPROP_NUM_THREADS from
    the environment, else 0, meaning automatic (the engine's rule, cbp_epoch_plan)."""
    want = os.environ.get("CBACKPROP_NUM_THREADS", "")
    if want:
        if not want.isdigit() or not 1 <= int(want) <= 64:
            raise ValueError(f"CBACKPROP_NUM_THREADS must be an integer in [1, 64], got {want!r}")
        return int(want)
    return 0


cdef int _dtype_code(dtype) except -1:
    return CBP_F64 if np.dtype(dtype) == np.float64 else CBP_F32


def fma_loop(dtype, kernels, size_t iters):
    """Run the multiply-add ceiling loop of a kernel variant (GIL released); returns the
    number of floating-point operations it performed: 24 * lanes * iters."""
    cdef int isa = KERNELS.index(kernels)
    cdef int code = _dtype_code(dtype)
    cdef double r
    with nogil:
        r = cbp_fma_loop(code, isa, iters)
    if r != r:
        raise RuntimeError("fma loop produced NaN")
    vbytes = {"plain": 16, "generic": 16, "avx2": 32, "avx512": 64}[kernels]
    return 24.0 * (vbytes // np.dtype(dtype).itemsize) * iters


cdef inline void *_data(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


def philox4x32(ctr, key):
    """Philox4x32-10 of the counter (4 words) under the key (2 words): 4 words (for tests)."""
    cdef uint32_t c[4]
    cdef uint32_t k[2]
    cdef uint32_t out[4]
    for i in range(4):
        c[i] = ctr[i]
    k[0], k[1] = key[0], key[1]
    cbp_philox4x32(out, c, k)
    return [out[0], out[1], out[2], out[3]]


def dropout_bits(uint64_t seed, uint64_t round, uint64_t batch, uint64_t layer, uint64_t row,
                 uint64_t unit):
    """The 32 random bits that decide whether a unit is dropped (cbp_dropout_bits)."""
    return cbp_dropout_bits(seed, round, batch, layer, row, unit)


def all_finite(cnp.ndarray arr, kernels=None):
    """True when every value of a C-contiguous, aligned float32/float64 array is finite
    (checked by the best kernel variant, or by `kernels`, one of kernels_supported())."""
    cdef int code = _dtype_code(arr.dtype)
    cdef size_t n = arr.size
    cdef void *p = _data(arr)
    cdef int ok
    if kernels is not None and kernels not in kernels_supported():
        raise ValueError(f"kernels must be one of {kernels_supported()} on this machine, got {kernels!r}")
    cdef int isa = -1 if kernels is None else KERNELS.index(kernels)
    if n == 0:
        return True
    with nogil:
        ok = cbp_all_finite(code, isa, p, n)
    return ok != 0


def _aligned_zeros(n, dtype):
    """A zeroed 1-D array of n values whose data starts on a 64-byte boundary (NumPy only
    promises 16): the kernels' 64-byte vector loads of rows then do not straddle two cache
    lines.  64 is the widest vector (AVX-512) and a cache line."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + CACHE_LINE, dtype=np.uint8)
    start = (-raw.ctypes.data) % CACHE_LINE
    return raw[start:start + n * dtype.itemsize].view(dtype)


#: Update rules (the C enum CBP_OPT_*); `opt` arguments name one of them with its
#: parameters: None (plain SGD, or momentum when mu != 0), ("nesterov",) (needs mu),
#: ("adam", beta1, beta2, eps).
RULES = {"sgd": CBP_OPT_SGD, "momentum": CBP_OPT_MOMENTUM, "nesterov": CBP_OPT_NESTEROV,
         "adam": CBP_OPT_ADAM}


cdef int _poll_signals(void *arg) noexcept with gil:
    """The epoch's poll (on the calling thread, between mini-batches): Python's signal
    handlers run here; an exception they raise (KeyboardInterrupt) stops the epoch and is
    kept on the engine to be raised when the epoch returns."""
    cdef Engine engine = <Engine>arg
    try:
        PyErr_CheckSignals()
    except BaseException as exc:
        engine._pending = exc
        return 1
    return 0


#: Every live engine, so that a forked child can give each a fresh lock.
_ENGINES = weakref.WeakSet()


def _after_fork_in_child():
    """A child made by fork() has only the thread that forked: a lock another thread held
    (training, say) stays held forever in the child.  Each engine gets a new lock there.
    (The epoch's threads are created per call and never outlive it, so no thread state needs
    rebuilding.)  The child's copy of a network that another thread was training holds the
    parameters as they were at the fork, possibly in the middle of a mini-batch."""
    for engine in list(_ENGINES):
        engine.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


cdef class Engine:
    """Parameter blob, gradient blob, optimizer state and workspace of one network, and the C
    calls on them."""
    cdef cbp_net net
    cdef readonly object dtype
    cdef readonly object sizes
    cdef readonly object params       # [n_params] parameter blob
    cdef readonly object grads        # [n_params] gradient blob, same layout
    cdef readonly object velocity     # [n_params] momentum velocity or Adam's first moment
                                      # (None until an update rule needs it)
    cdef readonly object moment2      # [n_params] Adam's second moment (None until Adam)
    cdef public double adam_steps     # Adam steps taken (its bias correction's t)
    cdef readonly object accum        # [n_params] accumulated gradient sum (None until used)
    cdef readonly object work         # the workspace (cbp_workspace_len elements), or None
    cdef public object lock           # serialises calls on this engine (threading.RLock:
                                      # a call may hold it across several; a new one in a
                                      # forked child)
    cdef object __weakref__
    cdef readonly int last_epoch_threads   # threads that took part in the last sgd epoch
    cdef readonly Py_ssize_t last_epoch_batches  # mini-batches it finished
    cdef public double poll_seconds   # the epoch checks for Ctrl-C at most this often
    cdef object _sizes_arr            # [L+1] size_t copy of sizes for C
    cdef object _act_arr              # [L+1] C int activation codes (index 0 unused)
    cdef readonly object dropout      # [L+1] float64 dropout rates (None: no dropout)
    cdef public uint64_t dropout_round  # the next training call's dropout round
    cdef object _pending              # an exception raised in the epoch's poll
    cdef size_t n_params, elem        # parameters; bytes per element
    cdef int type_num                 # NumPy's number of the dtype
    cdef Py_ssize_t n_in, n_out
    cdef double eta_min, eta_max      # normal range of eta in the engine dtype

    def __cinit__(self, sizes, dtype, act=None, int cost=0, dropout=None, uint64_t seed=0):
        """act: the CBP_ACT_* code of layers 1..L (default sigmoid); cost: CBP_COST_*;
        dropout: None or the rate of each layer [0, p_1, ..., p_{L-1}, 0] (hidden layers);
        seed: the dropout masks' key."""
        self.dtype = np.dtype(dtype)
        self.elem = self.dtype.itemsize
        self.type_num = self.dtype.num
        self.sizes = tuple(int(n) for n in sizes)
        L = len(self.sizes) - 1
        self._sizes_arr = np.array(self.sizes, dtype=np.uintp)
        self._act_arr = np.array([0] + list(act if act is not None else [0] * L), dtype=np.intc)
        self.net.dtype = _dtype_code(self.dtype)
        self.net.n_layers = L
        self.net.sizes = <const size_t *>_data(self._sizes_arr)
        self.net.act = <const int *>_data(self._act_arr)
        self.net.cost = cost
        self.dropout = None
        self.net.dropout = NULL
        if dropout is not None:
            self.dropout = np.array(dropout, dtype=np.float64)
            self.net.dropout = <const double *>_data(self.dropout)
        self.net.seed = seed
        self.dropout_round = 0
        self.n_params = cbp_n_params(self.net.sizes, L)
        self.params = _aligned_zeros(self.n_params, self.dtype)
        self.grads = _aligned_zeros(self.n_params, self.dtype)
        self.net.params = _data(self.params)
        self.net.velocity = NULL
        self.net.moment2 = NULL
        self.adam_steps = 0
        self.net.work = NULL
        self.net.m_cap = 0
        self.net.n_threads = default_num_threads()
        self.velocity = self.moment2 = self.accum = self.work = None
        self.poll_seconds = 0.02
        self.kernels = best_kernels()
        self.lock = threading.RLock()
        _ENGINES.add(self)
        self.n_in, self.n_out = self.sizes[0], self.sizes[L]
        self.eta_min = float(np.finfo(self.dtype).tiny)
        self.eta_max = float(np.finfo(self.dtype).max)

    # ---- settings ---------------------------------------------------------------------------
    @property
    def kernels(self):
        """The kernel variant this engine runs (one of kernels_supported())."""
        return KERNELS[self.net.isa]

    @kernels.setter
    def kernels(self, name):
        if name not in kernels_supported():
            raise ValueError(f"kernels must be one of {kernels_supported()} on this machine, got {name!r}")
        self.net.isa = KERNELS.index(name)

    @property
    def num_threads(self):
        """Threads one epoch of sgd may run on (other calls run on the calling thread): the
        value set, or when automatic the usable cores (how an epoch uses them: epoch_plan)."""
        return self.net.n_threads if self.net.n_threads else cbp_usable_cores()

    @num_threads.setter
    def num_threads(self, n):
        n = check_int(n, "num_threads", 1)      # (Network.num_threads delegates here)
        if n > 64:
            raise ValueError(f"num_threads must be an integer in [1, 64], got {n}")
        self.net.n_threads = n

    @property
    def num_threads_automatic(self):
        """True while num_threads was not set (nor CBACKPROP_NUM_THREADS)."""
        return self.net.n_threads == 0

    def epoch_threads(self, Py_ssize_t mini_batch_size):
        """The threads an epoch with this mini-batch size would use."""
        return cbp_epoch_threads(&self.net, mini_batch_size)

    @property
    def plan(self):
        """How epochs run: "auto" (the engine's policy, cbp_epoch_plan) or one of PLANS,
        forced where it applies (for measurements and tests)."""
        return "auto" if self.net.plan == 0 else PLANS[self.net.plan - 1]

    @plan.setter
    def plan(self, value):
        if value == "auto":
            self.net.plan = 0
        elif value in PLANS:
            self.net.plan = PLANS.index(value) + 1
        else:
            raise ValueError(f"plan must be 'auto' or one of {PLANS}, got {value!r}")

    @property
    def far_ns(self):
        """The round trip (ns) above which an automatic epoch counts the cores as far apart
        (cbp_epoch_plan_now); 0 means the engine's own threshold.  For tests."""
        return self.net.far_ns

    @far_ns.setter
    def far_ns(self, double value):
        if not value >= 0:
            raise ValueError(f"far_ns must be a number >= 0, got {value!r}")
        self.net.far_ns = value

    def epoch_plan(self, Py_ssize_t mini_batch_size):
        """How an epoch with this mini-batch size would run (cbp_epoch_plan): (kind, threads),
        kind one of PLANS.  An automatic two-thread epoch may still run alone when the cores
        share no cache at its start (cbp_epoch_plan_now; last_epoch_threads tells)."""
        cdef cbp_plan p = cbp_epoch_plan(&self.net, mini_batch_size)
        return PLANS[p.kind], p.threads

    @property
    def m_cap(self):
        """Rows the workspace holds."""
        return self.net.m_cap

    # ---- buffers ----------------------------------------------------------------------------
    def reserve(self, Py_ssize_t m):
        """Make the workspace hold at least m rows (allocates only when it grows).  All or
        nothing: when the allocation fails (MemoryError), the old workspace stays in use."""
        if m <= <Py_ssize_t>self.net.m_cap:
            return
        work = _aligned_zeros(cbp_workspace_len(&self.net, m), self.dtype)
        self.work = work
        self.net.work = _data(work)
        self.net.m_cap = m

    def workspace_nbytes(self):
        """Bytes held by the workspace (z, a, delta and gathered-target blocks)."""
        return 0 if self.work is None else self.work.nbytes

    def ensure_velocity(self):
        """Allocate the momentum velocity (zeros, same layout as params) if not yet there."""
        if self.velocity is None:
            velocity = _aligned_zeros(self.n_params, self.dtype)
            self.velocity = velocity
            self.net.velocity = _data(velocity)

    def ensure_moment2(self):
        """Allocate Adam's second moment (zeros) if not yet there."""
        if self.moment2 is None:
            moment2 = _aligned_zeros(self.n_params, self.dtype)
            self.moment2 = moment2
            self.net.moment2 = _data(moment2)

    cdef cbp_update _rule(self, double eta, double decay, double mu, opt) except *:
        """The C update for h = (eta, keep, decay, mu) (keep = 1 - decay is implied) and opt
        (RULES), with the state it needs allocated."""
        cdef cbp_update u
        u.eta, u.decay, u.mu = eta, decay, mu
        u.beta1 = u.beta2 = u.eps = 0
        u.t = self.adam_steps
        u.round = self.dropout_round
        u.save = NULL
        if opt is None:
            u.kind = CBP_OPT_MOMENTUM if mu != 0 else CBP_OPT_SGD
        else:
            u.kind = RULES[opt[0]]
            if u.kind == CBP_OPT_ADAM:
                u.beta1, u.beta2, u.eps = opt[1], opt[2], opt[3]
                self.ensure_moment2()
        if u.kind != CBP_OPT_SGD:
            self.ensure_velocity()
        return u

    def accumulate_alloc(self):
        """Allocate accum (zeros) if not yet there."""
        if self.accum is None:
            self.accum = _aligned_zeros(self.n_params, self.dtype)

    def layer_views(self, Py_ssize_t m):
        """(z, a, delta): lists of [m, n_l] views (rows cbp_workspace_ld apart) of the workspace blocks of layers 1..L
        (a also has a^0 first, the gathered input of sgd epochs); m <= m_cap."""
        s = self.sizes
        zs, as_, ds = [], [], []
        for l in range(len(s)):
            as_.append(self._block(CBP_WS_A, l, m))
            if l:
                zs.append(self._block(CBP_WS_Z, l, m))
                ds.append(self._block(CBP_WS_DELTA, l, m))
        return zs, as_, ds

    def workspace_ld(self, Py_ssize_t l):
        """The row stride (elements) of layer l's workspace blocks (n_l, or padded)."""
        if not 0 <= l < len(self.sizes):
            raise ValueError(f"l must be a layer index in [0, {len(self.sizes) - 1}], got {l}")
        return cbp_workspace_ld(&self.net, l)

    def _block(self, int which, Py_ssize_t l, Py_ssize_t m):
        cdef size_t o = cbp_workspace_offset(&self.net, which, l)
        cdef size_t ld = cbp_workspace_ld(&self.net, l)
        n = self.sizes[l]
        return self.work[o:o + m * ld].reshape(m, ld)[:, :n]

    def dropout_keep(self, Py_ssize_t m):
        """keep^l of the last training step's first m rows, l = 1..L-1 (None where layer l
        has no dropout): 0 for a dropped unit, 1 / (1 - p_l) for a kept one.  Views of the
        workspace (a padded layer's rows are strided: copy before keeping them)."""
        if self.dropout is None:
            return [None] * (len(self.sizes) - 2)
        return [self._block(CBP_WS_KEEP, l, m) if self.dropout[l] > 0 else None
                for l in range(1, len(self.sizes) - 1)]

    # ---- the C calls (arrays validated by the caller) ---------------------------------------
    def predict(self, cnp.ndarray x):
        """a^L for all rows of x ([m, n_0], m >= 1), m_cap rows at a time (reserve first);
        returns a new [m, n_L] array."""
        cdef size_t m = x.shape[0]
        cdef cnp.ndarray out = np.empty((m, self.n_out), dtype=self.dtype)
        cdef void *po = _data(out)
        cdef const void *px = _data(x)
        with nogil:
            cbp_net_forward(&self.net, po, px, m)
        return out

    def predict_z(self, cnp.ndarray x):
        """(z^L, a^L) for all rows of x ([m, n_0], m >= 1; reserve first): new [m, n_L]
        arrays, from one forward pass of m_cap rows at a time (z^L copied from the
        workspace after each)."""
        cdef size_t m = x.shape[0], cap = self.net.m_cap, start = 0, rows
        cdef size_t row_in = self.n_in * self.elem, row_out = self.n_out * self.elem
        cdef cnp.ndarray a = np.empty((m, self.n_out), dtype=self.dtype)
        cdef cnp.ndarray z = np.empty((m, self.n_out), dtype=self.dtype)
        cdef char *pa = <char *>_data(a)
        cdef char *pz = <char *>_data(z)
        cdef const char *px = <const char *>_data(x)
        if cap == 0:
            raise ValueError("predict_z needs a workspace: reserve(m) first")
        cdef const char *zL = <const char *>self.net.work + self.elem * cbp_workspace_offset(
            &self.net, CBP_WS_Z, self.net.n_layers)                      # [m_cap, n_L]
        with nogil:
            while start < m:
                rows = cap if m - start > cap else m - start
                cbp_net_forward(&self.net, pa + start * row_out, px + start * row_in, rows)
                memcpy(pz + start * row_out, zL, rows * row_out)
                start += rows
        return z, a

    def backprop(self, cnp.ndarray x, cnp.ndarray y, double scale, bint accumulate=False,
                 cnp.ndarray into=None):
        """grads (or into) (+)= the gradient of scale * sum_x C_x over the m rows of x, y
        (m <= m_cap); scale 1/m gives the batch average.  accumulate=False zeroes it first."""
        if into is None:
            into = self.grads
        if not accumulate:
            into.fill(0)
        cdef size_t m = x.shape[0]
        cdef void *pg = _data(into)
        cdef const void *px = _data(x)
        cdef const void *py = _data(y)
        with nogil:
            cbp_net_backprop(&self.net, pg, px, py, m, scale)

    def accumulate(self, x, y):
        """accum += the summed gradient of the m rows of x, y (m <= m_cap); grads is not
        touched."""
        self.accumulate_alloc()
        self.backprop(x, y, 1.0, accumulate=True, into=self.accum)

    def apply_gradient(self, double eta, double keep=1.0, double decay=0.0, double mu=0.0,
                       opt=None, cnp.ndarray gradient=None, double scale=1.0):
        """One update with the gradient scale * the gradient blob (or `gradient`), see
        cbp_update; opt: RULES."""
        if gradient is None:
            gradient = self.grads
        cdef cbp_update u = self._rule(eta, decay, mu, opt)
        cdef const void *pg = _data(gradient)
        with nogil:
            cbp_net_update(&self.net, pg, scale, &u)
        if u.kind == CBP_OPT_ADAM:
            self.adam_steps += 1

    def apply_accumulated(self, Py_ssize_t samples, double eta, double keep=1.0,
                          double decay=0.0, double mu=0.0, opt=None):
        """One update with the average gradient accum / samples."""
        self.accumulate_alloc()
        self.apply_gradient(eta, keep, decay, mu, opt, gradient=self.accum, scale=1.0 / samples)

    def sgd_step(self, cnp.ndarray x, cnp.ndarray y, double eta, double keep=1.0,
                 double decay=0.0, double mu=0.0, opt=None):
        """One update_mini_batch on the m rows of x, y (m <= m_cap); opt: RULES."""
        cdef cbp_update u = self._rule(eta, decay, mu, opt)
        self._run_step(_data(x), _data(y), x.shape[0], &u, False)

    cdef int _run_step(self, const void *px, const void *py, size_t m, cbp_update *u,
                       bint check) except -1:
        """The C step on the m rows at px, py with rule u, and the counters a step advances;
        with check, then 1 when every parameter is finite after it, else 0."""
        cdef int ok = 1
        with nogil:
            cbp_net_step(&self.net, px, py, m, u)
            if check:
                ok = cbp_all_finite(self.net.dtype, -1, self.net.params, self.n_params)
        if u.kind == CBP_OPT_ADAM:
            self.adam_steps += 1
        self.dropout_round += 1
        return ok

    cdef bint _fits(self, object a, Py_ssize_t cols):
        """a is a C-contiguous, aligned 2-D ndarray of the engine dtype with cols columns,
        at least one row, finite values, not overlapping the parameter blob."""
        if type(a) is not cnp.ndarray:
            return False
        cdef cnp.ndarray arr = <cnp.ndarray>a
        if (arr.ndim != 2 or arr.shape[1] != cols or arr.shape[0] == 0
                or cnp.PyArray_TYPE(arr) != self.type_num
                or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr)):
            return False
        cdef const char *lo = <const char *>self.net.params
        cdef const char *hi = lo + self.n_params * self.elem
        cdef const char *p = <const char *>_data(arr)
        if p < hi and p + arr.shape[0] * cols * self.elem > lo:
            return False
        return cbp_all_finite(self.net.dtype, -1, p, arr.shape[0] * cols) != 0

    def try_step(self, x, y, eta):
        """update_mini_batch's fast path: when x and y are C-contiguous 2-D arrays of the
        engine dtype with matching shapes, finite values and no overlap with the parameter
        blob, and eta is a finite float in the dtype's normal range, run a plain SGD step
        that saves every parameter's old value into grads, and return 1 when the parameters
        are all finite after it, 2 when not (the caller then puts grads back).  Return 0
        (changing nothing) for anything else: the caller then takes the general path, which
        converts what it can and names what is wrong."""
        if type(eta) is not float:
            return 0
        cdef double e = eta
        if not (e >= self.eta_min and e <= self.eta_max):
            return 0
        if not (self._fits(x, self.n_in) and self._fits(y, self.n_out)) or x.shape[0] != y.shape[0]:
            return 0
        cdef cbp_update u
        cdef int ok
        with self.lock:
            self.reserve(x.shape[0])
            u = self._rule(e, 0.0, 0.0, None)
            u.save = _data(self.grads)
            ok = self._run_step(_data(x), _data(y), x.shape[0], &u, True)
        return 1 if ok else 2

    def sgd_epoch(self, cnp.ndarray x, targets, cnp.ndarray perm, Py_ssize_t mini_batch_size,
                  double eta, double keep=1.0, double decay=0.0, double mu=0.0, opt=None):
        """One epoch of mini-batch SGD over the rows of x in the order perm (int64, [n]);
        targets: rows [*, n_L] of the engine dtype, or int64 labels [*] (one-hot rows built
        per mini-batch); 1 <= mini_batch_size <= m_cap.  Ctrl-C (a Python signal handler's
        exception) stops it after a whole number of mini-batches and is raised then."""
        if not 1 <= mini_batch_size <= <Py_ssize_t>self.net.m_cap:
            raise ValueError(f"mini_batch_size must be in [1, m_cap = {self.net.m_cap}] (reserve "
                             f"first), got {mini_batch_size}")
        cdef cnp.ndarray t = <cnp.ndarray?>targets
        cdef cbp_epoch_data d
        d.x = _data(x)
        d.labels = <const int64_t *>_data(t) if t.ndim == 1 else NULL
        d.y = NULL if t.ndim == 1 else _data(t)
        d.perm = <const int64_t *>_data(perm)
        d.n = perm.shape[0]
        d.mini_batch_size = mini_batch_size
        d.poll_seconds = self.poll_seconds
        self.last_epoch_batches = 0
        if d.n == 0:
            return
        cdef cbp_update u = self._rule(eta, decay, mu, opt)
        cdef cbp_epoch_result r
        self._pending = None
        with nogil:
            r = cbp_net_epoch(&self.net, &d, &u, _poll_signals, <void *>self)
        self.last_epoch_threads = r.threads
        self.last_epoch_batches = r.batches
        if u.kind == CBP_OPT_ADAM:
            self.adam_steps += r.batches
        self.dropout_round += 1
        if self._pending is not None:
            exc, self._pending = self._pending, None
            raise exc
