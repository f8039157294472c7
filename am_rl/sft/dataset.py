"""verl's multi-turn SFT dataset with the loss on the final assistant turn only, and samples over max_length dropped
(AM-Thinking-v1 report §4.1).

verl's MultiTurnSFTDataset puts the loss on every assistant turn, and with `truncation: error` stops training at the
first sample over `max_length` (other settings cut it into a half answer). The recipes name this subclass through
verl's `data.custom_cls` extension point: at load, conversations over max_length tokens (the whole chat template,
as verl's sanity check tokenizes it) are dropped and counted; per item, verl tokenizes every turn as before, and every
turn but the last gets a zero loss mask. A conversation that does not end with an assistant turn would train on
nothing, and is refused.
"""

from __future__ import annotations

import logging

from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

logger = logging.getLogger(__name__)


class FinalTurnSFTDataset(MultiTurnSFTDataset):
    def _read_files_and_process(self):
        super()._read_files_and_process()
        kwargs = {"tokenize": True, "return_dict": False, **self.apply_chat_template_kwargs}
        keep = [len(self.tokenizer.apply_chat_template(m, **kwargs)) <= self.max_length for m in self.messages]
        self.dropped_over_max_length = keep.count(False)
        if self.dropped_over_max_length:
            logger.warning("dropped %d of %d samples over max_length=%d tokens (never truncated)",
                           self.dropped_over_max_length, len(keep), self.max_length)  # fmt: skip
            self.dataframe = self.dataframe[keep]
            self.messages = [m for m, k in zip(self.messages, keep) if k]
            if self.tools is not None:
                self.tools = [t for t, k in zip(self.tools, keep) if k]
            if self.enable_thinking is not None:
                self.enable_thinking = [e for e, k in zip(self.enable_thinking, keep) if k]

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
