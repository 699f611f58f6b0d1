"""The GPT of nanoGPT as DreamTeam configures it, assembled by slot (dreamteam/components).

Parameter names are nanoGPT's (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`, ...), so a
nanoGPT state_dict loads unchanged, and they equal the Flax reference's (jaxmodel/model.py) up to the
`h.0` <-> `h_0` spelling, which the parity converter maps by name.

Forward pass, top to bottom; each step in brackets is a slot, filled by the model's default or by what the
component of the config that fills it (`config.filler(slot)`) lists for the slot in its torch module's FILLS
(torchport/<name>.py; `filler` below):
    E = wte                                       [token_embedding: byte_ngram_embedding's wte + pooled n-grams]
    x = E[idx] + wpe[pos]                         (wpe only without a position component: rope, laplace_bias)
    for each block:
        x = x + attn(ln_1(x))                     [norm] [token_mixer: difference_ssm in its layers]
            attn: q, k, v = qkv(x)                [qkv: c_attn, or mla's latent projections]
                  q, k = t(q, k) for t in order   [qk_transform: rms_qknorm's q_norm/k_norm, then rope]
                  y = attend(q, k, v, bias, extra_kv)  [score_bias: laplace_bias] [extra_kv: memory_tape]
                  c_proj(y)
        x = x + mlp(ln_2(x))                      [mlp]
    logits, loss = head(ln_f(x), E, targets)      [head: tied to E (+ output_bias), or adaptive_softmax]
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from dreamteam.config import GPTConfig
from torchport.fast import linear_cross_entropy


def fills(component: str) -> dict:
    """{slot: what the model builds there} of a component: the FILLS of its torch module, torchport/<component>.py,
    imported when a model is built (so that a component's module may build on this one's classes)."""
    return importlib.import_module(f"torchport.{component}").FILLS


def filler(config: GPTConfig, slot: str, default=None):
    """What fills the exclusive `slot` of config's model: `default` (the model's own; None: nothing), or what the
    component that fills it lists for the slot."""
    component = config.filler(slot)
    return default if component is None else fills(component)[slot]


def after_step_hooks(config: GPTConfig) -> list:
    """The after-step updates of config's components, in declaration order: hook(model), run outside the gradient
    after each optimizer step (moe_mlp: its balancing bias)."""
    return [fills(component)["after_step"] for component in config.fillers("after_step")]


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias: (x - mean) / sqrt(var + 1e-5) * weight (+ bias)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def attend(q, k, v, bias=None, extra_kv=None, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(d) + bias) v per head, q, k, v (B, H, T, d): over each query's causal context, and over
    extra keys and values (H, M, d) that every query sees (extra_kv, in front of the context; no bias then).
    bias (H, T, T) carries the causal -inf itself. scaled_dot_product_attention runs the fused, tiled kernels
    on CUDA and MPS (FlashAttention's algorithm: the tiled_attention component changes nothing here;
    torchport/tiled_attention.py is its reference loop) and computes the same numbers on the CPU."""
    if extra_kv is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=bias is None)
    if bias is not None:
        raise ValueError("a score bias needs a position for every key; the extra keys have none")
    B, H, T, _ = q.shape
    k_extra, v_extra = extra_kv
    M = k_extra.shape[1]
    k = torch.cat([k_extra.unsqueeze(0).expand(B, H, M, -1), k], dim=2)
    v = torch.cat([v_extra.unsqueeze(0).expand(B, H, M, -1), v], dim=2)
    visible = torch.cat([torch.ones(T, M, dtype=torch.bool, device=q.device),
                         torch.ones(T, T, dtype=torch.bool, device=q.device).tril()], dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=dropout_p)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017): qkv -> qk transforms -> attend -> c_proj.
    The qkv slot's default: one fused projection c_attn."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.fill_slots(config, config.head_dim, config.rotary_dim)

    def fill_slots(self, config: GPTConfig, head_dim: int, rotary_dim: int):
        """The slots after qkv, for queries and keys of width head_dim whose first rotary_dim coordinates rotate.
        Each filler registers its parameters on the attention (attn.q_norm, attn.tape_k, attn.laplace_rate:
        nanoGPT's and the checkpoints' names) and is called with it; the qk transforms apply in declaration order."""
        self.config, self.n_head, self.dropout = config, config.n_head, config.dropout
        self.head_dim, self.rotary_dim = head_dim, rotary_dim
        self.attend = filler(config, "attend", attend)
        self.qk_transforms = [fills(name)["qk_transform"](self, config) for name in config.fillers("qk_transform")]
        bias, extra = filler(config, "score_bias"), filler(config, "extra_kv")
        self.bias_filler = bias(self, config) if bias else None
        self.extra_kv_filler = extra(self, config) if extra else None

    @torch.no_grad()
    def init_weights(self):
        """After GPT-2's N(0, 0.02) pass: the residual projection at 0.02 / sqrt(2 n_layer)."""
        nn.init.normal_(self.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def project(self, x):
        """The qkv slot: per-head queries, keys and values, each (B, H, T, hd)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        return tuple(a.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for a in (q, k, v))

    def qkv(self, x, pos=None):
        """Queries and keys after the qk transforms (QK-norm, rotation), and values, each (B, H, T, d)."""
        q, k, v = self.project(x)
        pos = torch.arange(x.size(1), device=x.device) if pos is None else pos
        for transform in self.qk_transforms:
            q, k = transform(self, q, k, pos)
        return q, k, v

    def score_bias(self, pos):
        """The score_bias slot's (H, T, T) bias of the logits at positions pos (T,), or None (the causal mask)."""
        return None if self.bias_filler is None else self.bias_filler(self, pos)

    def extra_kv(self):
        """The extra_kv slot's keys and values (H, M, d), or None. The keys have no position: they pass the qk
        transforms that need none (k_norm), never a rotation."""
        if self.extra_kv_filler is None:
            return None
        k, v = self.extra_kv_filler(self)
        for transform in self.qk_transforms:
            k = transform.keys_without_position(self, k)
        return k, v

    def forward(self, x, pos=None):
        B, T, _ = x.size()
        pos = torch.arange(T, device=x.device) if pos is None else pos
        q, k, v = self.qkv(x, pos)
        y = self.attend(q, k, v, self.score_bias(pos), self.extra_kv(), self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, -1)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """c_proj(gelu(c_fc(x))), hidden width 4 * n_embd, exact (erf) GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.n_layer = config.n_layer

    @torch.no_grad()
    def init_weights(self):
        """After GPT-2's N(0, 0.02) pass: the residual projection at 0.02 / sqrt(2 n_layer)."""
        nn.init.normal_(self.c_proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.n_layer))

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class TiedHead(nn.Linear):
    """The head slot's default: logits = h W^T (+ b), W the token embedding (tied in GPT); the bias b exists
    where a component fills the output_bias slot (good_turing_prior), which also initializes it."""

    def __init__(self, config: GPTConfig, token_counts=None):
        output_bias = config.filler("output_bias")
        super().__init__(config.n_embd, config.vocab_size, bias=output_bias is not None)
        self.output_bias, self.token_counts = output_bias, token_counts

    @torch.no_grad()
    def init_weights(self):
        if self.output_bias is not None:
            fills(self.output_bias)["output_bias"](self, self.token_counts)

    def logits(self, h, E=None):
        """E: the token embedding rows the head is tied to (GPT.token_embedding_matrix); None: its own weight."""
        return F.linear(h, self.weight if E is None else E, self.bias)

    def cross_entropy(self, logits_BxTxV, targets_BxT):
        """Mean cross-entropy over the targets that are not -1."""
        return F.cross_entropy(logits_BxTxV.view(-1, logits_BxTxV.size(-1)), targets_BxT.reshape(-1), ignore_index=-1)

    def loss(self, h, targets, E=None):
        return self.cross_entropy(self.logits(h, E), targets)

    def fused_loss(self, h_NxD, targets_N, chunk, smoothing_eps: float = 0.0, prior=None, z_loss: float = 0.0, E=None):
        """The same loss without the N x V logits (torchport/fast.py); smoothing_eps, prior, z_loss:
        succession_objective's loss instead."""
        W = self.weight if E is None else E
        return linear_cross_entropy(h_NxD, W, targets_N, chunk, self.bias, smoothing_eps, prior, z_loss)


def layer_norm(config: GPTConfig) -> LayerNorm:
    """The norm slot's default."""
    return LayerNorm(config.n_embd, config.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer_index: int = 0):
        super().__init__()
        self.ln_1 = filler(config, "norm", layer_norm)(config)
        if config.ssm_layer(layer_index):  # the token mixer, kept under the name attn: parameters stay h.i.attn.*
            self.attn = filler(config, "token_mixer")(config)
        else:  # by the qkv slot: mla's attention projects through its latents
            self.attn = filler(config, "qkv", CausalSelfAttention)(config)
        self.ln_2 = filler(config, "norm", layer_norm)(config)
        self.mlp = filler(config, "mlp", MLP)(config)

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
        if config.filler("token_embedding") is not None:  # e.g. transformer.byte_ngram, composing E from wte
            name, module = filler(config, "token_embedding")  # (its name under transformer, the module)
            modules[name] = module(config)
        if config.learned_positions:  # else a component (rope, ...) gives the positions
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=filler(config, "norm", layer_norm)(config),
        )
        head = config.filler("head")
        if head is not None:  # e.g. transformer.adaptive_softmax, scoring with the tied wte
            modules[head] = fills(head)["head"](config, token_counts, modules["wte"])
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = TiedHead(config, token_counts)
        # weight tying (https://paperswithcode.com/method/weight-tying)
        self.transformer.wte.weight = self.lm_head.weight
        mixture = config.filler("head_mixture")
        if mixture is not None:  # e.g. ngram_memory (needs ngram_stats); registered last: the other weights draw as without it
            self.add_module(mixture, fills(mixture)["head_mixture"](config, ngram_stats))

        # init all weights as GPT-2, then what each module initializes itself (residual projections, gates, priors)
        self.apply(self._init_weights)
        for module in self.modules():
            if hasattr(module, "init_weights"):
                module.init_weights()
        transform = filler(config, "block_weights")
        if transform is not None:  # how the blocks read their matrices (fixed_point_qat: fake-quantized)
            transform(self.transformer.h, config)

    @property
    def head(self):
        """The head object, logits(h) and loss(h, targets): the tied lm_head, or the head slot's filler."""
        head = self.config.filler("head")
        return self.lm_head if head is None else self.transformer[head]

    @property
    def head_mixture(self):
        """The head_mixture slot's module (log p_mix from the head's logits), or None."""
        mixture = self.config.filler("head_mixture")
        return None if mixture is None else getattr(self, mixture)

    @torch.no_grad()
    def after_step(self) -> None:
        """The components' updates outside the gradient, after each optimizer step (after_step_hooks; none by default)."""
        for hook in after_step_hooks(self.config):
            hook(self)

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

    def token_embedding_matrix(self):
        """E (V, n_embd): the rows the ids are embedded with and the tied head scores with; wte's, or the
        token_embedding slot's composition of them (byte_ngram_embedding: wte plus pooled byte n-gram vectors)."""
        component = self.config.filler("token_embedding")
        wte = self.transformer.wte.weight
        return wte if component is None else self.transformer[fills(component)["token_embedding"][0]].compose(wte)

    def embed_with_rows(self, idx):
        """(x, E): token (and, without a position component, learned position) embeddings (B, T, n_embd), and
        the rows E they were taken from, which the tied head reads too. The ids go through a module call (wte, or
        the token_embedding slot's module): the candidate harness counts that call as the step's forward."""
        b, t = idx.size()
        if t > self.config.block_size:
            raise ValueError(f"cannot forward a sequence of length {t}; block_size is {self.config.block_size}")
        component = self.config.filler("token_embedding")
        if component is None:
            x, E = self.transformer.wte(idx), self.transformer.wte.weight
        else:
            x, E = self.transformer[fills(component)["token_embedding"][0]](idx, self.transformer.wte.weight)
        if self.config.learned_positions:
            x = x + self.transformer.wpe(torch.arange(0, t, dtype=torch.long, device=idx.device))
        return self.transformer.drop(x), E

    def embed(self, idx):
        """The input embeddings (B, T, n_embd) (see embed_with_rows)."""
        return self.embed_with_rows(idx)[0]

    def trunk(self, idx):
        """(ln_f(x), E): the final hidden states (B, T, n_embd) before the output head, and the embedding rows E."""
        x, E = self.embed_with_rows(idx)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x), E

    def hidden(self, idx):
        """The final hidden states ln_f(x) of shape (B, T, n_embd), before the output head."""
        return self.trunk(idx)[0]

    def forward(self, idx, targets=None):
        """(logits, loss). With targets: logits at every position and the mean cross-entropy;
        without: logits at the last position only (generation), loss None."""
        x, E = self.trunk(idx)  # one E for the input and the tied head
        if targets is None:
            x = x[:, [-1], :]
        logits = self.head.logits(x, E)
        mixture = self.head_mixture
        if mixture is not None:  # logits: log p_mix over the V ids, mixed from the head's logits
            # training: the memory's rows leave each target's own occurrence in train.bin out of its counts
            logits = mixture(logits, x, idx, targets if self.training else None)
            return logits, None if targets is None else mixture.nll(logits, targets)
        return logits, None if targets is None else self.head.cross_entropy(logits, targets)

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
