"""The automatic choice between two threads and one thread with the feeder
(cbackprop._autothreads): each way twice first (alternating, the feeder first), then the
faster by the better of its last two epochs, and the slower again every probe_every epochs
so that a change of the machine is seen."""
from cbackprop._autothreads import FEEDER, TEAM, AutoThreads


def run(auto, key, seconds, epochs):
    """Choose and record `epochs` epochs of 10 rows whose way takes seconds[way]."""
    ways = []
    for _ in range(epochs):
        way = auto.choose(key)
        auto.record(key, way, seconds[way], 10)
        ways.append(way)
    return ways


def test_each_way_twice_then_the_faster_with_a_probe_every_probe_every_epochs():
    auto = AutoThreads(probe_every=4)
    ways = run(auto, "k", {TEAM: 1.0, FEEDER: 2.0}, 10)
    # epochs 0-3 measure; epoch 4 (4 % 4 == 0) and epoch 8 probe the slower way
    assert ways == [FEEDER, TEAM, FEEDER, TEAM, FEEDER, TEAM, TEAM, TEAM, FEEDER, TEAM]
    assert auto.seconds_per_row("k") == {TEAM: 0.1, FEEDER: 0.2}


def test_one_disturbed_epoch_does_not_decide():
    auto = AutoThreads(probe_every=100)
    # the team's first epoch is slow (another process had the second core), its second not
    auto.record("k", FEEDER, 2.0, 10)
    auto.record("k", TEAM, 5.0, 10)
    auto.record("k", FEEDER, 2.0, 10)
    auto.record("k", TEAM, 1.0, 10)
    assert auto.choose("k") == TEAM


def test_a_slower_machine_switches_the_choice_after_two_epochs():
    auto = AutoThreads(probe_every=100)
    assert run(auto, "k", {TEAM: 1.0, FEEDER: 2.0}, 5) == [FEEDER, TEAM, FEEDER, TEAM, TEAM]
    # the team's epochs now take 3 s (cross-core transfers got slow): after two of them
    # (the estimate is the better of the last two) the feeder is faster
    assert run(auto, "k", {TEAM: 3.0, FEEDER: 2.0}, 4) == [TEAM, TEAM, FEEDER, FEEDER]


def test_kinds_are_measured_separately_and_empty_epochs_are_not_recorded():
    auto = AutoThreads()
    run(auto, "a", {TEAM: 1.0, FEEDER: 2.0}, 4)
    assert auto.choose("b") == FEEDER
    auto.record("b", FEEDER, 1.0, 0)
    assert auto.seconds_per_row("b") == {}
    assert auto.choose("b") == FEEDER
