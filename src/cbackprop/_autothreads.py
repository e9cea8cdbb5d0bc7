"""The automatic thread choice for mid-sized networks: measured, not guessed.

Between about 5e5 and 2e7 flops per mini-batch (the book's [784,30,10] and [784,100,10]
at mini-batch 10 and 100) a mini-batch takes a few to a few hundred microseconds, and
whether two training threads beat one training thread plus the feeder depends on how
reliably the second core runs and how fast the cores exchange cache lines.  On the 2-vCPU
VM this was tuned on, a cross-core round trip took 50-70 ns most of the time, and then
[784,100,10] float64 trained in 0.108 s an epoch on two threads against 0.175 s with the
feeder; for minutes at a time the second vCPU ran only part of the time (round trips of
450-2000 ns, barrier waits of 15-40 us per mini-batch), and the two threads needed
0.20-0.30 s.  So each
automatic epoch in that range runs the way that measured faster: each way is measured
twice first (alternating, the feeder first), a way's estimate is the faster of its last
two epochs (wall time per row; one epoch disturbed by another process does not decide),
and every `probe_every` epochs the slower way runs once more, so that a change of the
machine is seen.  The result is bitwise the same either way; only the time differs.
"""

TEAM = "team"        # threads = 2 (the hidden split where it applies)
FEEDER = "feeder"    # one training thread, the feeder gathering the mini-batches
KEEP = 2             # epochs per way the estimate looks at (and measures first)


class AutoThreads:
    """Per epoch kind (a key such as the mini-batch size), the last measured seconds per
    row of each way, and the choice for the next epoch."""

    def __init__(self, probe_every=16):
        self.probe_every = probe_every
        self._seconds = {}      # key -> {way: seconds per row of its last KEEP epochs}
        self._epochs = {}       # key -> epochs run

    def choose(self, key):
        """TEAM or FEEDER for the next epoch of this kind: each way KEEP times first
        (alternating, FEEDER first), then the faster, except every probe_every-th epoch,
        which runs the slower."""
        seen = self._seconds.get(key, {})
        counts = {way: len(seen.get(way, ())) for way in (FEEDER, TEAM)}
        if min(counts.values()) < KEEP:
            return FEEDER if counts[FEEDER] <= counts[TEAM] else TEAM
        fast, slow = sorted((TEAM, FEEDER), key=lambda way: min(seen[way]))
        return slow if self._epochs.get(key, 0) % self.probe_every == 0 else fast

    def record(self, key, way, seconds, rows):
        """The wall time of an epoch of `rows` rows that ran `way`."""
        if rows <= 0:
            return
        times = self._seconds.setdefault(key, {}).setdefault(way, [])
        times.append(seconds / rows)
        del times[:-KEEP]
        self._epochs[key] = self._epochs.get(key, 0) + 1

    def seconds_per_row(self, key):
        """{way: estimated seconds per row (the faster of its last KEEP epochs)}."""
        return {way: min(times) for way, times in self._seconds.get(key, {}).items()}
