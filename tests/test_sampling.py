"""TSN segment targets and their exact matching to keyframe times."""

import itertools

import numpy as np
import pytest

from shortvid.decode import match_to_targets, place_times, segment_targets


def test_test_targets_are_segment_centres():
    np.testing.assert_allclose(segment_targets(0.0, 9.0, 3), [1.5, 4.5, 7.5])
    np.testing.assert_allclose(segment_targets(2.0, 4.0, 2), [2.5, 3.5])


def test_train_targets_fall_inside_their_segments():
    rng = np.random.default_rng(0)
    for _ in range(50):
        targets = segment_targets(0.0, 12.0, 4, "train", rng)
        assert all(3 * i <= t < 3 * (i + 1) for i, t in enumerate(targets))


def test_train_targets_pick_a_candidate_of_the_segment_when_there_is_one():
    rng = np.random.default_rng(1)
    keyframes = [0.0, 1.0, 5.0, 5.5, 11.0]
    seen = set()
    for _ in range(100):
        targets = segment_targets(0.0, 12.0, 3, "train", rng, candidates=keyframes)
        assert targets[0] in (0.0, 1.0)
        assert targets[1] in (5.0, 5.5)
        assert targets[2] == 11.0
        seen.add(tuple(targets))
    assert len(seen) == 4  # every combination comes up: the choice is random


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        segment_targets(0, 1, 0)
    with pytest.raises(ValueError):
        segment_targets(0, 1, 3, mode="eval")
    with pytest.raises(ValueError):
        match_to_targets([], [1.0])


def test_enough_keyframes_gives_distinct_nearest_ones():
    # 4 s video, keyframes every second; centres of 3 segments: 0.67, 2.0, 3.33
    assert match_to_targets([0, 1, 2, 3], segment_targets(0, 4, 3)) == [1, 2, 3]
    # all keyframes early: still distinct, in order
    assert match_to_targets([0, 0.1, 0.2, 0.3], [1.5, 4.5, 7.5]) == [1, 2, 3]


def test_few_keyframes_are_all_used_and_repeated():
    assert match_to_targets([0.0, 8.0], [1.5, 4.5, 7.5]) == [0, 1, 1]  # 4.5 is nearer 8 than 0
    assert match_to_targets([4.0], [1.5, 4.5, 7.5]) == [0, 0, 0]
    picks = match_to_targets([0.0, 0.1], [1.5, 4.5, 7.5])
    assert sorted(set(picks)) == [0, 1] and picks == sorted(picks)


def _brute_force(times, targets):
    n, k = len(times), len(targets)
    if n >= k:
        options = itertools.combinations(range(n), k)
    else:
        options = (c for c in itertools.combinations_with_replacement(range(n), k) if set(c) == set(range(n)))
    return min(sum(abs(times[j] - t) for j, t in zip(c, targets, strict=True)) for c in options)


@pytest.mark.parametrize("seed", range(40))
def test_matching_is_optimal(seed):
    rng = np.random.default_rng(seed)
    times = sorted(rng.uniform(0, 10, rng.integers(1, 8)).tolist())
    targets = sorted(rng.uniform(0, 10, rng.integers(1, 6)).tolist())
    picks = match_to_targets(times, targets)
    assert len(picks) == len(targets)
    assert picks == sorted(picks)
    if len(times) >= len(targets):
        assert len(set(picks)) == len(targets)
    else:
        assert set(picks) == set(range(len(times)))
    cost = sum(abs(times[j] - t) for j, t in zip(picks, targets, strict=True))
    assert cost == pytest.approx(_brute_force(times, targets))


def test_place_times_gives_each_keyframe_its_own_segment():
    assert place_times([0.0, 9.0], [1.5, 4.5, 7.5]) == [0, None, 1]
    assert place_times([4.4], [1.5, 4.5, 7.5]) == [None, 0, None]
