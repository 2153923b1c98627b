"""promoe.evaluation.prompt_cache: how a batch's prompts split into the starts a task's rows share and each row's own rest,
and when they are not split."""

from __future__ import annotations

import torch

from promoe.evaluation.prompt_cache import plan, positions, task_keys


def test_a_task_s_rows_share_their_common_start_and_keep_a_token_of_their_own() -> None:
    ids = torch.tensor([[7, 7, 7, 1, 1], [0, 7, 7, 7, 2], [0, 0, 0, 3, 3]])
    mask = (ids != 0).long()
    layout = plan(ids, mask, ["a", "a", "b"], pad_id=0, min_len=3)
    assert layout.prefix_ids.tolist() == [[7, 7, 7]] and layout.group.tolist() == [0, 0, -1]
    assert layout.suffix_ids.tolist() == [[1, 1], [0, 2], [3, 3]] and layout.positions == 9
    assert layout.combined()[1].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 1], [0, 0, 0, 1, 1]]
    assert plan(ids, mask, ["a", "a", "b"], pad_id=0, min_len=4) is None  # a's rows share 3 tokens, under the minimum
    assert plan(ids, mask, ["a", "b", "c"], pad_id=0, min_len=1) is None  # no task twice
    same = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8]])
    layout = plan(same, torch.ones_like(same), ["a", "a"], pad_id=0, min_len=1)
    assert layout.prefix_ids.tolist() == [[5, 6, 7]] and layout.suffix_ids.tolist() == [[8], [8]]  # one token own


def test_rows_sharing_nothing_do_not_widen_the_others_and_no_split_that_saves_nothing() -> None:
    wide = torch.tensor([[0, 0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 5, 6, 8], [1, 2, 3, 4, 5, 6, 7]])
    layout = plan(wide, (wide != 0).long(), ["a", "a", "b"], pad_id=0, min_len=1)
    assert layout.prefix_ids.tolist() == [[0, 0, 0, 0, 5, 6], [1, 2, 3, 4, 5, 6]]  # b's start alone, not in every
    assert layout.group.tolist() == [0, 0, 1] and layout.suffix_ids.tolist() == [[7], [8], [7]]  # row's suffix
    long_short = torch.tensor([[1] * 10 + [2], [1] * 10 + [3], [4, 4, 5] + [7] * 8, [4, 4, 6] + [7] * 8])
    assert plan(long_short, torch.ones_like(long_short), ["a", "a", "b", "b"], pad_id=0, min_len=2) is None


def test_tasks_are_ordered_by_their_prompts_own_parts_then_shared_starts_and_batches_costed() -> None:
    tasks = ["a", "b", "a", "c", "b"]
    ids = [[1, 2, 3, 4], [1, 2, 9], [1, 2, 3, 5, 6], [7], [1, 2, 9, 9]]
    assert task_keys(tasks, ids) == {"a": (2, 3, "a"), "b": (1, 3, "b"), "c": (0, 1, "c")}  # one prompt: all start
    assert positions(ids[:3], ["x", "y", "z"]) == 15  # nothing shared: padded to the longest
    assert positions(ids[:3], tasks[:3], min_len=1) == 2 * 3 + 3 * 2  # a's start [1, 2, 3]; b's [1] alone
    assert positions([[5] * 20 + [1], [5] * 20 + [2, 2]], ["a", "a"]) == 20 + 2 * 2  # the start once
