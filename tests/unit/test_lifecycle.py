"""A node's lifecycle table (``zkv.core.lifecycle``): the moves a node may make."""

import pytest

from zkv.core.lifecycle import ALLOWED, IllegalTransition, Lifecycle, advance


def test_an_isolated_node_confirms_its_map_before_it_serves_again():
    assert advance(Lifecycle.ISOLATED, Lifecycle.CONFIRMING) is Lifecycle.CONFIRMING
    with pytest.raises(IllegalTransition, match="isolated -> serving"):
        advance(Lifecycle.ISOLATED, Lifecycle.SERVING)


def test_decommissioned_is_final_and_stopping_only_ends_decommissioned():
    assert not ALLOWED[Lifecycle.DECOMMISSIONED]
    assert ALLOWED[Lifecycle.STOPPING] == {Lifecycle.DECOMMISSIONED}
    with pytest.raises(IllegalTransition):
        advance(Lifecycle.STOPPING, Lifecycle.SERVING)


def test_only_serving_and_isolated_nodes_coordinate():
    assert {s for s in Lifecycle if s.coordinates} == {Lifecycle.SERVING, Lifecycle.ISOLATED}


def test_a_node_outside_the_map_only_joins_or_stops():
    assert ALLOWED[Lifecycle.OUTSIDE] == {Lifecycle.SERVING, Lifecycle.STOPPING}
