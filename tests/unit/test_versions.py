from zkv.model.versions import HybridClock, Version


def test_versions_follow_wall_time_and_never_go_back():
    clock = HybridClock("a")
    v1 = clock.next(1000)
    v2 = clock.next(999)  # the wall clock stepped back
    v3 = clock.next(1000)
    assert v1 < v2 < v3
    assert clock.next(2000) == Version(2000, 0, "a")


def test_next_exceeds_an_observed_version_from_a_fast_clock():
    clock = HybridClock("a")
    seen = Version(5000, 7, "z")
    v = clock.next(1000, above=seen)
    assert v > seen


def test_same_wall_and_counter_breaks_ties_by_node_id():
    clock = HybridClock("a")
    above = Version(1000, 0, "b")
    clock.observe(Version(1000, 0, "b"))
    assert clock.next(1000, above=above) > above


def test_versions_are_totally_ordered_across_nodes():
    a, b = HybridClock("a"), HybridClock("b")
    vs = [a.next(10), b.next(10), a.next(10), b.next(11)]
    assert len(set(vs)) == len(vs)
    assert sorted(vs) == sorted(vs, key=lambda v: (v.wall_ms, v.counter, v.node_id))
