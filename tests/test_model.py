import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfloop import model as mdl
from selfloop.domains.countdown import Countdown


def test_char_tokenizer_round_trip_and_plain_hf_loading(tmp_path):
    tok = mdl.build_char_tokenizer(Countdown.alphabet)
    text = "3 5 7>22:3*5=15,15+7=22"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text)  # one token per character, spaces kept
    assert tok.decode(ids) == text
    assert tok(text + tok.eos_token).input_ids[-1] == tok.eos_token_id

    model = mdl.build_gpt2(tok, n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=0)
    mdl.save(model, tok, tmp_path / "m", {"x": 1})
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert not list((tmp_path / "m").glob("*.bin"))
    assert mdl.is_complete(tmp_path / "m")

    tok2 = AutoTokenizer.from_pretrained(tmp_path / "m")
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path / "m", use_safetensors=True)
    assert tok2.decode(tok2(text, add_special_tokens=False).input_ids) == text
    x = torch.tensor([ids])
    assert torch.equal(model(x).logits, model2(x).logits)


def test_same_seed_same_weights():
    tok = mdl.build_char_tokenizer("01")
    a = mdl.build_gpt2(tok, 1, 8, 2, 8, seed=3).state_dict()
    b = mdl.build_gpt2(tok, 1, 8, 2, 8, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_rejects_non_model_dir(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        mdl.load(tmp_path)


def test_sft_runs_without_activation_checkpointing(monkeypatch):
    """TRL defaults to activation checkpointing; it only costs time for small models."""
    import trl

    from selfloop.steps import train as tr

    seen = {}
    real = trl.SFTConfig

    def spy(*a, **kw):
        cfg = real(*a, **kw)
        seen["ac"] = cfg.activation_checkpointing
        return cfg

    monkeypatch.setattr(trl, "SFTConfig", spy)
    tok = mdl.build_char_tokenizer("0123456789+")
    model = mdl.build_gpt2(tok, 1, 16, 2, 16, seed=0)
    rows = tr.mix_to_rows([{"reference": ["a", "a"], "synthetic": []}],
                          {"a": {"prompt": "1+1", "response": "2"}}, tok, 16)
    assert rows["labels"][0][:3] == [-100, -100, -100]  # no loss on the prompt
    assert rows["input_ids"][0][-1] == tok.eos_token_id
    tr.sft(model, tok, rows, steps=1, batch_size=2, lr=1e-3, scheduler="constant", warmup_ratio=0.0,
           weight_decay=0.0, seed=0, max_length=16)
    assert seen["ac"] is False


def test_train_schedule_sets_the_learning_rate_over_a_call(monkeypatch):
    """train.schedule: 'constant' keeps the peak to the last step; 'cosine' and 'linear'
    decay to 0 by it. Read from the real trainer's optimizer at every step."""
    import pytest
    import trl
    from transformers import TrainerCallback

    from selfloop import loop
    from selfloop.config import load_params

    lrs: list[float] = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            lrs.append(optimizer.param_groups[0]["lr"])

    real = trl.SFTTrainer

    def spy(*a, callbacks=(), **kw):
        return real(*a, callbacks=[*callbacks, Record()], **kw)

    monkeypatch.setattr(trl, "SFTTrainer", spy)
    tok = mdl.build_char_tokenizer("0123456789+")
    steps = 8
    rows = {"input_ids": [[1, 2, 3]] * (2 * steps), "labels": [[-100, 2, 3]] * (2 * steps)}
    got = {}
    for schedule in ("constant", "cosine", "linear"):
        params = load_params(None, [f"train.schedule={schedule}", f"train.steps={steps}",
                                    "train.batch_size=2", "train.lr=0.01", "model.n_positions=16"])
        lrs.clear()
        model = mdl.build_gpt2(tok, 1, 16, 2, 16, seed=0)
        loop._train(params, model, tok, rows, steps, 0, loop.NullReporter())
        got[schedule] = list(lrs)
    assert got["constant"] == [pytest.approx(0.01)] * steps
    for schedule in ("cosine", "linear"):
        assert got[schedule][0] == pytest.approx(0.01)
        assert all(a > b for a, b in zip(got[schedule], got[schedule][1:], strict=False))  # decays each step
        assert got[schedule][-1] < 0.01 / steps * 1.5  # the last step is near 0
    assert got["cosine"][steps // 4] > got["linear"][steps // 4]  # cosine stays higher early on


def test_train_ema_saves_the_moving_average_of_the_steps_weights(monkeypatch):
    """train.ema: the model ends with the exponential moving average of its weights after each
    step (the first step's weights, then decay * average + (1 - decay) * weights), read from
    the real trainer, bit for bit what torch's AveragedModel gives; at 0 it ends with the last
    step's weights."""
    import torch
    import trl
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from transformers import TrainerCallback

    from selfloop import loop
    from selfloop.config import load_params

    seen: list[dict] = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            seen.append({k: v.detach().clone() for k, v in model.named_parameters()})

    real = trl.SFTTrainer

    def spy(*a, callbacks=(), **kw):
        return real(*a, callbacks=[*callbacks, Record()], **kw)

    monkeypatch.setattr(trl, "SFTTrainer", spy)
    tok = mdl.build_char_tokenizer("0123456789+")
    steps, decay = 4, 0.8  # not 0.5, where decay and 1 - decay could be swapped unseen
    rows = {"input_ids": [[1, 2, 3], [4, 5, 6]] * steps, "labels": [[-100, 2, 3], [-100, 5, 6]] * steps}
    ended = {}
    for ema in (0.0, decay):
        params = load_params(None, [f"train.ema={ema}", f"train.steps={steps}", "train.batch_size=2",
                                    "train.lr=0.01", "model.n_positions=16"])
        seen.clear()
        model = mdl.build_gpt2(tok, 1, 16, 2, 16, seed=0)
        loop._train(params, model, tok, rows, steps, 0, loop.NullReporter())
        ended[ema] = {k: v.detach().clone() for k, v in model.named_parameters()}
        assert len(seen) == steps
        if ema == 0.0:
            last = seen[-1]
            assert all(torch.equal(ended[ema][k], last[k]) for k in last)
    expected = dict(seen[0])
    for weights in seen[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    assert all(torch.allclose(ended[decay][k], expected[k], atol=1e-6) for k in expected)
    assert not all(torch.allclose(ended[decay][k], seen[-1][k], atol=1e-6) for k in expected)
    holder = mdl.build_gpt2(tok, 1, 16, 2, 16, seed=0)
    oracle = AveragedModel(holder, multi_avg_fn=get_ema_multi_avg_fn(decay))
    for weights in seen:
        with torch.no_grad():
            for k, p in holder.named_parameters():
                p.copy_(weights[k])
        oracle.update_parameters(holder)
    assert all(torch.equal(ended[decay][k], p) for k, p in oracle.module.named_parameters())


def test_weight_average_of_a_bfloat16_model_keeps_small_steps():
    """The average is float32: 1% steps toward weights one bfloat16 rounding unit away add up
    (kept in bfloat16, each would round back to the first weights)."""
    import torch

    from selfloop.steps.train import WeightAverage

    layer = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    unit = 2.0 ** -7  # bfloat16's spacing just above 1.0
    average = WeightAverage(layer, 0.99)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        average.update()
        layer.weight.fill_(1.0 + unit)
        for _ in range(100):
            average.update()
    assert average.average[0].dtype == torch.float32
    assert torch.allclose(average.average[0], torch.full((4, 4), 1.0 + unit * (1 - 0.99 ** 100)))
    average.apply()
    assert layer.weight.dtype == torch.bfloat16
    assert torch.all(layer.weight == 1.0 + unit)  # 1.00495 rounds to the upper neighbour


def test_default_tokenizer_writes_every_reference_answer_of_both_formats():
    # The default alphabet once lacked parentheses: a third of the infix reference answers
    # were trained with padding where the brackets were, and the model never wrote one.
    import random

    from selfloop.domains.countdown import Problem, solve

    tok = mdl.build_char_tokenizer(Countdown.alphabet)
    unk = tok.unk_token_id
    rng, seen = random.Random(0), 0
    for fmt in ("infix", "steps"):
        domain = Countdown((1, 9), (1, 99), answer_format=fmt)
        for _ in range(300):
            problem = Problem(tuple(rng.randint(1, 9) for _ in range(rng.randint(3, 5))), rng.randint(1, 99))
            solution = solve(problem)
            if solution is None:
                continue
            text = domain.prompt({"numbers": list(problem.numbers), "target": problem.target}) \
                + domain.completion(solution)
            ids = tok(text, add_special_tokens=False).input_ids
            assert unk not in ids and tok.decode(ids) == text, text
            seen += "(" in text
    assert seen > 50  # the infix answers that need brackets were among them
