"""The GPT of nanoGPT as DreamTeam configures it, with the persona components as switches.

Parameter names are nanoGPT's (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`, ...), so a
nanoGPT state_dict loads unchanged, and they equal the Flax reference's (jaxmodel/model.py) up to the
`h.0` <-> `h_0` spelling, which the parity converter maps by name.

Forward pass, top to bottom:
    x = wte[idx] + wpe[pos]                     (wpe only without a position component such as rope)
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    logits = ln_f(x) @ wte^T                      (output head tied to the token embedding)
                                                  (adaptive_softmax: log p over the V ids from frequency clusters)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.config import GPTConfig
from dreamteam.laplace_rates import initial_rates, inverse_softplus
from torchport.adaptive_softmax import AdaptiveSoftmax
from torchport.difference_ssm import DifferenceSSM
from torchport.fixed_point_qat import apply_fixed_point_qat
from torchport.golden_swiglu import GoldenSwiGLU
from torchport.good_turing_prior import init_output_bias
from torchport.memory_tape import tape_attention
from torchport.laplace_bias import laplace_bias, rates
from torchport.laplace_glu import LaplaceGLU
from torchport.mla import MultiHeadLatentAttention
from torchport.moe_mlp import MoEMLP
from torchport.ngram_memory import NgramMemory
from torchport.rms_qknorm import RMSNorm
from torchport.rope import apply_rope


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias: (x - mean) / sqrt(var + 1e-5) * weight (+ bias)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, softmax(q k^T / sqrt(d) + causal mask) v (Vaswani et al. 2017).

    Fused qkv projection `c_attn`; `scaled_dot_product_attention` picks the fused kernel of the device.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.has("rms_qknorm"):
            self.q_norm = RMSNorm(config.head_dim, config.rms_eps, config.rms_qknorm_qk_gain)
            self.k_norm = RMSNorm(config.head_dim, config.rms_eps, config.rms_qknorm_qk_gain)
        if config.has("memory_tape"):  # M key and value slots per head, no position (torchport/memory_tape.py)
            shape = (config.n_head, config.memory_tape_slots, config.head_dim)
            self.tape_k = nn.Parameter(torch.randn(shape) * 0.02)
            self.tape_v = nn.Parameter(torch.randn(shape) * 0.02)
        if config.has("laplace_bias"):  # pre-softplus decay rates, one per head (ALiBi's slopes at init)
            init = inverse_softplus(initial_rates(config.n_head, config.laplace_bias_exponent))
            self.laplace_rate = nn.Parameter(torch.tensor(init, dtype=torch.get_default_dtype()))
        self.config = config
        self.n_head = config.n_head
        self.dropout = config.dropout

    def qkv(self, x, pos=None):
        """Per-head queries, keys (after QK-norm and rotation where on) and values, each (B, H, T, hd)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.config.has("rms_qknorm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.config.has("rope"):
            pos = torch.arange(T, device=x.device) if pos is None else pos
            q = apply_rope(q, pos, self.config.rotary_dim, self.config.rope_base)
            k = apply_rope(k, pos, self.config.rotary_dim, self.config.rope_base)
        return q, k, v

    def tape_keys(self):
        """The memory tape's keys (H, M, hd), through k_norm where rms_qknorm is on (never rotated)."""
        return self.k_norm(self.tape_k) if self.config.has("rms_qknorm") else self.tape_k

    def score_bias(self, T, device, pos=None):
        """The additive bias of the attention logits, (H, T, T) with -inf above the diagonal, or None."""
        if not self.config.has("laplace_bias"):
            return None
        pos = torch.arange(T, device=device) if pos is None else pos
        return laplace_bias(rates(self.laplace_rate), pos)

    def forward(self, x, pos=None):
        B, T, C = x.size()
        q, k, v = self.qkv(x, pos)
        dropout_p = self.dropout if self.training else 0.0
        if self.config.has("memory_tape"):  # one softmax over [tape | context] (config refuses laplace_bias here)
            y = tape_attention(q, k, v, self.tape_keys(), self.tape_v, dropout_p)
        else:
            bias = self.score_bias(T, x.device, pos)  # the mask carries the causal -inf where a bias is on
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=bias is None)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """c_proj(gelu(c_fc(x))), hidden width 4 * n_embd, exact (erf) GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


def make_norm(config: GPTConfig) -> nn.Module:
    """LayerNorm, or RMSNorm where rms_qknorm is on."""
    return RMSNorm(config.n_embd, config.rms_eps) if config.has("rms_qknorm") else LayerNorm(config.n_embd, config.bias)


def make_mlp(config: GPTConfig) -> nn.Module:
    if config.has("laplace_glu"):
        return LaplaceGLU(config)
    if config.has("moe_mlp"):
        return MoEMLP(config)
    return GoldenSwiGLU(config) if config.has("golden_swiglu") else MLP(config)


def make_attention(config: GPTConfig, layer_index: int = 0) -> nn.Module:
    """The token mixer of block `layer_index`: difference_ssm in its layers, else (latent) attention.
    (tiled_attention changes nothing here: scaled_dot_product_attention already runs the fused, tiled
    kernels on CUDA and MPS; torchport/tiled_attention.py is the reference loop.)"""
    if config.ssm_layer(layer_index):
        return DifferenceSSM(config)  # kept under the name attn: parameters stay h.i.attn.*
    return MultiHeadLatentAttention(config) if config.has("mla") else CausalSelfAttention(config)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer_index: int = 0):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = make_attention(config, layer_index)
        self.ln_2 = make_norm(config)
        self.mlp = make_mlp(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """token_counts: how often each id occurs in train.bin (dreamteam.data.token_counts), for components
    built from token frequencies; None where no such component is on. ngram_stats: the bigram counts of train.bin
    (dreamteam.components.ngram_memory.bigram_stats), for ngram_memory; None where it is off."""

    def __init__(self, config: GPTConfig, token_counts=None, ngram_stats=None):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.token_counts = token_counts
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.learned_positions:  # else a component (rope, ...) gives the positions
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=make_norm(config),
        )
        if config.has("adaptive_softmax"):  # the output distribution from frequency clusters of the counts
            modules["adaptive_softmax"] = AdaptiveSoftmax(config, token_counts)
        self.transformer = nn.ModuleDict(modules)
        # good_turing_prior: a trained output bias, initialized below to the Good-Turing log-probabilities
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.has("good_turing_prior"))
        # weight tying (https://paperswithcode.com/method/weight-tying)
        self.transformer.wte.weight = self.lm_head.weight
        if config.has("ngram_memory"):  # slot: head_mixture (registered last: the other weights draw as without it)
            self.ngram_memory = NgramMemory(config, ngram_stats)

        self.apply(self._init_weights)
        # scaled init of the residual projections, per GPT-2
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
            elif pn.endswith("mlp.c_gate.weight") and config.has("laplace_glu"):  # the gate's inputs at unit scale
                torch.nn.init.normal_(p, mean=0.0, std=config.laplace_glu_gate_std)
        if config.has("fixed_point_qat"):  # the blocks' Linear layers read their weights fake-quantized
            apply_fixed_point_qat(self.transformer.h, config.fixed_point_qat_bits)
        if config.has("good_turing_prior"):
            init_output_bias(self.lm_head, token_counts)
        if config.has("ngram_memory"):  # slot: head_mixture
            self.ngram_memory.init_gate()

    def get_num_params(self, non_embedding: bool = True) -> int:
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.learned_positions:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def embed(self, idx):
        """Token (and, without a position component, learned position) embeddings, (B, T, n_embd)."""
        b, t = idx.size()
        if t > self.config.block_size:
            raise ValueError(f"cannot forward a sequence of length {t}; block_size is {self.config.block_size}")
        x = self.transformer.wte(idx)
        if self.config.learned_positions:
            x = x + self.transformer.wpe(torch.arange(0, t, dtype=torch.long, device=idx.device))
        return self.transformer.drop(x)

    def hidden(self, idx):
        """The final hidden states ln_f(x) of shape (B, T, n_embd), before the output head."""
        x = self.embed(idx)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None):
        """(logits, loss). With targets: logits at every position and the mean cross-entropy;
        without: logits at the last position only (generation), loss None."""
        x = self.hidden(idx)
        if self.config.has("ngram_memory"):  # slot: head_mixture (logits: log p_mix over the V ids)
            return self.ngram_memory(x, idx, targets, self.lm_head)
        if self.config.has("adaptive_softmax"):
            # logits: the normalized log-probabilities over all V ids; loss: -log p(target)
            h = x if targets is not None else x[:, [-1], :]
            logits = self.transformer.adaptive_softmax.log_probs(h.reshape(-1, h.size(-1)), self.lm_head.weight)
            logits = logits.view(*h.shape[:2], -1)
            loss = None if targets is None else F.nll_loss(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            return logits, loss
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])
            loss = None
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, eps: float = 1e-8,
                             fused: bool | None = None, lr_ratios: dict[str, float] | None = None):
        """nanoGPT's AdamW: weight decay on tensors of 2 or more dimensions only.

        fused: torch's single-kernel AdamW (the same update, other rounding: 20 float64 steps agree to 1e-12,
        tests/test_torch_model.py). None picks it on the CPU and CUDA, where torch has it (on the 2-core CPU
        the step of 1.7M parameters takes 2.4 ms against the multi-tensor loop's 10.0:
        benchmarks/bench_optimizer.py, README "Measured"); MPS keeps the loop. nanoGPT, the eager reference,
        fuses on CUDA only (torchport.recipe.reference_fused).
        lr_ratios: {parameter name: r}, each in a group of its own whose lr_ratio r scales the scheduled rate
        (torchport.recipe.optimizer_step)."""
        lr_ratios = lr_ratios or {}
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        rest = [p for n, p in params.items() if n not in lr_ratios]
        groups = [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ] + [{"params": [params[n]], "weight_decay": weight_decay if params[n].dim() >= 2 else 0.0, "lr_ratio": r}
             for n, r in lr_ratios.items()]
        if fused is None:
            fused = device_type in ("cpu", "cuda")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Sample max_new_tokens tokens after idx (B, T), feeding predictions back in (nanoGPT)."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size :]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
