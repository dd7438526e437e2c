"""A resume whose config cannot take the checkpoint's strategy or policy state is refused, naming the key."""

import pytest

from ol_ray.batching.policies import make_policy
from ol_ray.config import load_config
from ol_ray.selection.selector import make_strategy
from ol_ray.state.contract import save_parts
from ol_ray.state.fit import StateMismatch, check_state_fits, component_names, first_mismatch, saved_parts


def saved_by(*overrides):
    """What a checkpoint of a run with these settings holds of its strategy and policy."""
    cfg = load_config(None, ["stream.path=unused", *overrides])
    return {"parts": save_parts({"strategy": make_strategy(cfg.selection), "policy": make_policy(cfg.batching)}),
            **component_names(cfg)}


def test_first_mismatch_names_the_first_key_that_differs():
    assert first_mismatch({"a": 1, "b": {"c": [1]}}, {"a": 2, "b": {"c": [3, 4]}}) is None  # values may differ
    assert first_mismatch({"a": 1, "b": {"c": 1}}, {"a": 1, "b": {"d": 1}}) == "b.c"
    assert first_mismatch({"memory": []}, None) == "(all of it)"


def test_a_changed_strategy_whose_state_does_not_fit_is_refused():
    state = saved_by("selection.strategy=coverage")
    with pytest.raises(StateMismatch, match=r"selection.strategy=coverage and does not fit "
                                            r"selection.strategy=diversity \(state key 'centroids'\)"):
        check_state_fits(load_config(None, ["stream.path=unused", "selection.strategy=diversity"]), state)
    with pytest.raises(StateMismatch, match="selection.strategy=entropy"):  # stateful to stateless drops state
        check_state_fits(load_config(None, ["stream.path=unused", "selection.strategy=entropy"]), state)
    check_state_fits(load_config(None, ["stream.path=unused", "selection.strategy=coverage"]), state)


def test_a_change_that_loses_no_state_is_allowed():
    check_state_fits(load_config(None, ["stream.path=unused", "selection.strategy=random"]),
                     saved_by("selection.strategy=entropy"))
    check_state_fits(load_config(None, ["stream.path=unused", "selection.strategy=coverage"]),
                     saved_by("selection.strategy=entropy"))  # a stateful strategy after a stateless one: fresh


def test_a_changed_policy_is_refused_and_the_adaptive_policy_takes_only_its_own_keys():
    state = saved_by("batching.policy=adaptive")
    with pytest.raises(StateMismatch, match="batching.policy=adaptive and does not fit batching.policy=fixed"):
        check_state_fits(load_config(None, ["stream.path=unused", "batching.policy=fixed"]), state)
    adaptive = make_policy(load_config(None, ["stream.path=unused", "batching.policy=adaptive"]).batching)
    with pytest.raises(ValueError, match="no state 'period'"):
        adaptive.load_state_dict({**state["parts"]["policy"], "period": 7})
    assert not hasattr(adaptive, "period")


def test_stateless_parts_of_a_mix_or_min_of_may_be_swapped_on_resume():
    check_state_fits(load_config(None, ["stream.path=unused", "selection.strategy=mix", "selection.mix.margin=0.5",
                                        "selection.mix.entropy=0.5"]),
                     saved_by("selection.strategy=mix", "selection.mix.margin=0.5", "selection.mix.random=0.5"))
    check_state_fits(load_config(None, ["stream.path=unused", "batching.policy=min_of",
                                        "batching.policies=[adaptive, periodic]"]),
                     saved_by("batching.policy=min_of", "batching.policies=[adaptive, resource]"))


def test_a_checkpoint_from_before_the_state_contract_is_read_by_its_old_keys():
    current = saved_by("selection.strategy=coverage")
    legacy = {"strategy_state": current["parts"]["strategy"], "policy_state": None, "continual": {"phases": []},
              **component_names(load_config(None, ["stream.path=unused", "selection.strategy=coverage"]))}
    assert saved_parts(legacy) == {"strategy": current["parts"]["strategy"], "continual": {"phases": []}}
    with pytest.raises(StateMismatch, match="state key 'centroids'"):
        check_state_fits(load_config(None, ["stream.path=unused", "selection.strategy=diversity"]), legacy)
