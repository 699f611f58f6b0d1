"""torchport/graph_step.py on the CPU: the static-buffer step (what CUDA captures) computes what train_mps.py's
eager step computes, every op of it is the same at every iteration (so a graph captured at one iteration replays
the right numbers at any other), and the places it cannot run are one clear error."""

import pytest
import torch

from dreamteam import registry
from parity.checks import synthetic_token_counts
from torchport import graph_step
from torchport import recipe as recipes
from torchport.model import GPT
from torchport.step import TrainStep, posterior_mean_of
from torchport.succession_objective import training_loss

B, T = 2, 16


def persona_setup(name, seed=0):
    spec = registry.get(name)
    cfg = spec.model.replace(n_layer=3, n_head=2, n_embd=16, block_size=T)
    counts = synthetic_token_counts(cfg)
    torch.manual_seed(seed)
    model = GPT(cfg, token_counts=counts)
    optimizer = recipes.build_optimizer(model, spec.recipe, device_type="cpu")
    return spec, model, optimizer, posterior_mean_of(model)


def batches(n, vocab, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, B, T), generator=gen) for _ in range(n)]


def loss_fn(model, x, y):
    return training_loss(model, x, y, fast=True)


# baseline: constant lr; the others: cosine warmup (a new lr every step); laplace: posterior_mean's average
@pytest.mark.parametrize("name", ["baseline", "pierre_simon_laplace", "leonardo_da_vinci", "charles_babbage"])
def test_static_step_equals_the_eager_step(name):
    spec, model_e, opt_e, avg_e = persona_setup(name)
    _, model_g, opt_g, avg_g = persona_setup(name)
    step = graph_step.GraphStep(model_g, opt_g, spec.recipe, loss_fn, (B, T), "cpu", averaged=avg_g, capture=False)
    assert all(isinstance(g["lr"], torch.Tensor) for g in opt_g.param_groups)
    eager_step = TrainStep(model_e, opt_e, spec.recipe, fast=True, averaged=avg_e)  # train_mps.py's eager step
    data = batches(5, model_e.config.vocab_size)
    for it, (x, y) in enumerate(data):
        loss_e = eager_step(x, y, it)
        loss_g = step(x, y, it)
        assert loss_g.item() == loss_e.item(), (it, loss_g.item(), loss_e.item())
    for (n, p_e), p_g in zip(model_e.state_dict().items(), model_g.state_dict().values()):
        assert torch.equal(p_e, p_g), n
    if avg_e is not None:
        assert avg_g.steps == avg_e.steps == 5
        for (n, p_e), p_g in zip(avg_e.module.state_dict().items(), avg_g.module.state_dict().values()):
            torch.testing.assert_close(p_g, p_e, rtol=1e-6, atol=1e-7, msg=n)
        assert not torch.equal(avg_e.module.transformer.wte.weight, model_e.transformer.wte.weight)  # averaged
    if spec.recipe.schedule != "constant":
        assert opt_g.param_groups[0]["lr"].item() == recipes.learning_rate(4, spec.recipe)
    assert all(p.grad is None for p in model_g.parameters())  # zeroed as the eager step does


VALUES = (bool, int, float, complex, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


class OpRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Every op with the non-tensor values of its arguments: what a CUDA graph freezes at capture."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not str(func).startswith("profiler."):  # torch's own record_function markers
            leaves = torch.utils._pytree.tree_leaves((args, kwargs))
            self.ops.append((str(func), tuple(v if isinstance(v, VALUES) else type(v).__name__
                                              for v in leaves if not isinstance(v, torch.Tensor))))
        return func(*args, **kwargs)


@pytest.mark.parametrize("name", ["pierre_simon_laplace", "charles_babbage"])
def test_no_iteration_number_enters_the_step(name):
    """The step's ops and their Python arguments are the same at iterations 1, 2 and 3, while its learning
    rate and average weight change: replaying a graph captured at one of them computes the others."""
    spec, model, opt, averaged = persona_setup(name)
    step = graph_step.GraphStep(model, opt, spec.recipe, loss_fn, (B, T), "cpu", averaged=averaged, capture=False)
    body = step._body
    recorded = []

    def recording_body():
        with OpRecorder() as rec:
            loss = body()
        recorded.append(rec.ops)
        return loss

    step._body = recording_body
    lrs = []
    for it, (x, y) in enumerate(batches(4, model.config.vocab_size)):
        step(x, y, it)
        lrs.append(opt.param_groups[0]["lr"].item())
    assert len(set(lrs)) == 4  # the schedule moved every step
    assert len(recorded[1]) > 100
    assert recorded[1] == recorded[2] == recorded[3]
    assert recorded[0] != recorded[1]  # (the first step also creates the optimizer's state)


def test_a_python_learning_rate_would_be_caught():
    """The recorder sees a learning rate set as a Python float (what recipe.optimizer_step does): the test
    above would fail on a step that bakes it in."""
    spec, model, opt, _ = persona_setup("pierre_simon_laplace")
    runs = []
    for it, (x, y) in enumerate(batches(3, model.config.vocab_size)):
        with OpRecorder() as rec:
            loss_fn(model, x, y).backward()
            recipes.optimizer_step(model, opt, spec.recipe, it)
        runs.append(rec.ops)
    assert runs[1] != runs[2]


def test_graph_needs_cuda_and_capture_safe_components():
    spec, model, opt, _ = persona_setup("baseline")
    with pytest.raises(graph_step.GraphUnavailableError, match="needs a CUDA device; this run's device is 'cpu'"):
        graph_step.GraphStep(model, opt, spec.recipe, loss_fn, (B, T), "cpu")
    loop = recipes.build_optimizer(model, spec.recipe, device_type="cpu", fused=False)
    with pytest.raises(graph_step.GraphUnavailableError, match="fused AdamW"):
        graph_step.GraphStep(model, loop, spec.recipe, loss_fn, (B, T), "cpu", capture=False)
    for name, component in (("alan_turing", "muon"), ("ada_lovelace", "moe_mlp")):
        cfg = registry.get(name).model
        with pytest.raises(graph_step.GraphUnavailableError, match=f"cannot capture {component}: "):
            graph_step.check_graphable(cfg, "cuda")
    graph_step.check_graphable(registry.get("pierre_simon_laplace").model, "cuda:0")  # no error


def test_cuda_graph_flag_without_cuda_is_one_error_line(tmp_path, capsys, monkeypatch):
    import train_mps

    assert train_mps.main(["--cuda-graph", "--device", "cpu", "--out-dir", str(tmp_path), "--max-iters", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the CUDA graph step needs a CUDA device; this run's device is 'cpu'\n"
    # on a (pretended) CUDA machine, a persona with a capture-unsafe component: refused before anything loads
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert train_mps.main(["--cuda-graph", "--device", "cuda", "--persona", "alan_turing",
                           "--out-dir", str(tmp_path), "--max-iters", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the CUDA graph step cannot capture muon: ") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
