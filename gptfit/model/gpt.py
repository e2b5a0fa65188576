"""gptfit's own decoder-only GPT, written as a Hugging Face model.

Being a `PreTrainedModel` with its own config class means `save_pretrained` / `from_pretrained`, the
Trainer, `generate` and the Auto classes all work with it. The layers follow GPT-2 (pre-norm blocks,
learned positions, tied input and output embeddings); the attention is gptfit's shared
`CausalSelfAttention`. Biases are optional (off by default: a little faster, no worse). In training,
the output layer and the loss run fused (`core.lm_loss`), so the [tokens, vocab] logits are never made.

The layers' math is written once, in the modules; `forward` and `decode_step` both run it through
`_hidden`. `decode_step` is what gptfit's decoding loops call (core.sampling.steps): the same modules,
without the Hugging Face output wrapping and with the output layer on the last position only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from gptfit.core.attention import CausalSelfAttention
from gptfit.core.lm_loss import IGNORE_INDEX, linear_cross_entropy
from gptfit.core.sampling.cache import KVCache


class GPTConfig(PreTrainedConfig):
    model_type = "gptfit"
    # The library's cache and generation code read these standard names.
    attribute_map = {
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "hidden_size": "n_embd",
        "max_position_embeddings": "block_size",
    }

    def __init__(
        self,
        vocab_size: int = 2048,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        self.vocab_size, self.n_layer, self.n_head, self.n_embd = vocab_size, n_layer, n_head, n_embd
        self.block_size, self.dropout, self.bias = block_size, dropout, bias
        self.initializer_range = initializer_range
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


# The forwards below read their submodules from `self._modules` (the registry `self.name` looks in, after
# a failed ordinary lookup that costs 0.6 us here). It is the same live registry, so a module set later
# (a patch, an adapter) is the one called, hooks included; decoding reads about 40 a token.


def _dropout(p: float) -> nn.Module:
    # At p = 0 a Dropout layer still copies its input in training mode: leave it out. Dropout is the
    # identity in eval mode, so the forwards call it in training only (one module call less per use
    # while decoding).
    return nn.Dropout(p) if p > 0 else nn.Identity()


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = _dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The exact (erf) GELU, as in nanoGPT. GPT-2's tanh approximation is the same curve to ~1e-3, but
        # on CPU it takes 2.2x as long forward and backward (torch's tanh is the costly part).
        m = self._modules
        y = m["c_proj"](F.gelu(m["c_fc"](x)))
        return m["dropout"](y) if self.training else y


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.dropout, config.bias, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, key_padding=None):
        m = self._modules
        x = x + m["attn"](m["ln_1"](x), cache, key_padding)
        return x + m["mlp"](m["ln_2"](x))


class GPTForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = GPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    # The loss is a plain mean per batch: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=_dropout(config.dropout),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # GPT-2's scaled init of the projections that write into the residual stream.
        if isinstance(module, (CausalSelfAttention, MLP)):
            std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.c_proj.weight, mean=0.0, std=std)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def set_capture(self, on: bool) -> None:
        """Route attention through the explicit path and keep its probabilities (see core.attention)."""
        for block in self.transformer.h:
            block.attn.capture = on
            block.attn.captured = None

    def new_kv_cache(self, batch: int, capacity: int) -> KVCache:
        """A preallocated cache of `capacity` positions for `decode_step`."""
        c, p = self.config, next(self.parameters())
        return KVCache(c.n_layer, batch, c.n_head, c.n_embd // c.n_head, capacity, p.dtype, p.device)

    def _hidden(self, input_ids, position_ids, cache, key_padding) -> torch.Tensor:
        """Embeddings, then every block: [batch, time, n_embd], before the final norm."""
        t = self._modules["transformer"]._modules
        x = t["wte"](input_ids) + t["wpe"](position_ids)  # [batch, time, n_embd]
        if self.training:
            x = t["drop"](x)
        for block in t["h"]:
            x = block(x, cache, key_padding)
        return x

    def decode_step(
        self,
        input_ids: torch.LongTensor,  # [batch, time]: the new tokens
        cache: KVCache,
        position_ids: torch.LongTensor | None = None,  # [batch, time]; None: right after the cache
        attention_mask: torch.Tensor | None = None,  # [batch, past + time], 1 = real token
    ) -> torch.Tensor:
        """The next-token logits [batch, vocab] after `input_ids`, the cache holding what came before."""
        if position_ids is None:
            past = cache.get_seq_length()
            position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self._hidden(input_ids, position_ids, cache, _key_padding(attention_mask))
        m = self._modules
        return m["lm_head"](m["transformer"]._modules["ln_f"](x[:, -1]))  # [batch, vocab]

    def forward(
        self,
        input_ids: torch.LongTensor,  # [batch, time]
        attention_mask: torch.Tensor | None = None,  # [batch, past + time], 1 = real token
        position_ids: torch.LongTensor | None = None,
        cache=None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_logits: bool = False,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """With `labels`, also the mean next-token loss. In training mode with gradients on, the output
        layer and the loss run fused (core.lm_loss) and the logits are not made: `logits` is None unless
        `return_logits=True`."""
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        T = input_ids.shape[1]
        if past + T > self.config.block_size and position_ids is None:
            raise ValueError(f"sequence of {past + T} tokens exceeds the model's context of {self.config.block_size}")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)
        x = self.transformer.ln_f(self._hidden(input_ids, position_ids, cache, _key_padding(attention_mask)))
        if labels is not None:
            # Next-token loss: position t predicts token t + 1; -100 marks ignored targets. Shifting the
            # labels (not the logits) avoids copying the largest tensor of the step.
            targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
            if self.training and x.requires_grad and not (return_logits or logits_to_keep):
                loss = linear_cross_entropy(x.reshape(-1, x.shape[-1]), self.lm_head.weight, targets)
                return CausalLMOutputWithPast(loss=loss, logits=None, cache=cache)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(x)  # [batch, time, vocab]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, ignore_index=IGNORE_INDEX)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)


def _key_padding(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[batch, keys] True = real token, or None: only a mask that hides something takes the masked path."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()


AutoConfig.register(GPTConfig.model_type, GPTConfig)
AutoModelForCausalLM.register(GPTConfig, GPTForCausalLM)
