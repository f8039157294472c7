"""verl's multi-turn SFT dataset with the loss on the final assistant turn only (AM-Thinking-v1 report §4.1).

verl's MultiTurnSFTDataset puts the loss on every assistant turn. The recipes name this subclass through verl's
`data.custom_cls` extension point: each turn is tokenized by verl as before; every turn but the last one gets a zero
loss mask. A conversation that does not end with an assistant turn would train on nothing, and is refused.
"""

from __future__ import annotations

from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset


class FinalTurnSFTDataset(MultiTurnSFTDataset):
    def _process_single_message(self, index, message, full_message, tools=None, enable_thinking=None):
        if full_message[-1]["role"] != "assistant":
            raise ValueError(
                f"conversation ends with a {full_message[-1]['role']!r} turn: nothing to train on "
                "(distill writes conversations whose last turn is the teacher's answer)"
            )
        input_ids, loss_mask, attention_mask, inputs = super()._process_single_message(
            index, message, full_message, tools, enable_thinking
        )
        if index != len(full_message) - 1:
            loss_mask = loss_mask * 0  # (turn_tokens,) an earlier turn is context, not a target
        return input_ids, loss_mask, attention_mask, inputs
