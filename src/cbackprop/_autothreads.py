"""The automatic thread choice for mid-sized networks: measured, not guessed.

Between about 5e5 and 2e7 flops per mini-batch (the book's [784,30,10] and [784,100,10]
at mini-batch 10 and 100) a mini-batch takes a few to a few hundred microseconds, and
whether two training threads beat one training thread plus the feeder depends on how
fast the two cores exchange cache lines.  On the 2-vCPU VM this was tuned on, a
cross-core round trip took 50-70 ns most of the time, and then [784,100,10] float64
trained in 0.110 s an epoch on two threads against 0.175 s with the feeder; for minutes
at a time it took about 415 ns, and the two threads needed 0.21 s.  So each automatic
epoch in that range runs the way that measured faster (wall time per row, the last
epoch of each way), and every `probe_every` epochs runs the other way once, so that a
change is seen.  The result is bitwise the same either way; only the time differs.
"""

TEAM = "team"        # threads = 2 (the hidden split where it applies)
FEEDER = "feeder"    # one training thread, the feeder gathering the mini-batches


class AutoThreads:
    """Per epoch kind (a key such as the mini-batch size), the last measured seconds per
    row of each way, and the choice for the next epoch."""

    def __init__(self, probe_every=16):
        self.probe_every = probe_every
        self._seconds = {}      # key -> {way: seconds per row of its last epoch}
        self._epochs = {}       # key -> epochs run

    def choose(self, key):
        """TEAM or FEEDER for the next epoch of this kind: each way once (FEEDER first), then
        the faster, except every probe_every-th epoch, which runs the slower."""
        seen = self._seconds.get(key, {})
        for way in (FEEDER, TEAM):
            if way not in seen:
                return way
        fast, slow = sorted((TEAM, FEEDER), key=lambda way: seen[way])
        return slow if self._epochs.get(key, 0) % self.probe_every == 0 else fast

    def record(self, key, way, seconds, rows):
        """The wall time of an epoch of `rows` rows that ran `way`."""
        if rows <= 0:
            return
        self._seconds.setdefault(key, {})[way] = seconds / rows
        self._epochs[key] = self._epochs.get(key, 0) + 1

    def seconds_per_row(self, key):
        """{way: seconds per row} measured for this kind (a copy)."""
        return dict(self._seconds.get(key, {}))
