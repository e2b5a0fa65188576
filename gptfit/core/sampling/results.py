"""What decoding returns: the sequences, and (with trace=True) each step's candidates and beams."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Step:
    """One decoding step of a trace. Rows are the sequences decoded side by side."""

    index: int  # which new token: 0 is the first after the prompt
    token_ids: torch.Tensor  # [rows] the token each row took; beam search: [batch, beams], the new beams
    top_ids: torch.Tensor  # [rows, n] the most probable next tokens (beam search: of each previous beam)
    top_probs: torch.Tensor  # [rows, n] their probabilities, after the setting's transforms
    parents: torch.Tensor | None = None  # beam search: [batch, beams] the previous beam each beam extends
    scores: torch.Tensor | None = None  # beam search: [batch, beams] each beam's sum of log-probs


@dataclass
class Generation:
    """What `generate` returns. Rows: batch * num_return_sequences, the sequences of one prompt adjacent."""

    sequences: torch.Tensor  # [rows, prompt + new] the prompt (left padding included), then the new tokens
    prompt_length: int
    strategy: str  # greedy | sample | beam | beam_sample
    backend: str  # cached (gptfit's loop) | window (gptfit's loop, no cache) | generate (transformers)
    setting: dict
    seed: int
    scores: torch.Tensor | None = None  # beam search: [rows] the length-penalized score of each sequence
    steps: list[Step] = field(default_factory=list)  # filled when trace=True

    @property
    def new_tokens(self) -> torch.Tensor:  # [rows, new]
        return self.sequences[:, self.prompt_length :]
