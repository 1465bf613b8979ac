"""Any local Hugging Face causal-LM directory works in place of the default model; with a
chat template, prompts are instructions and answers come inside <answer> tags."""

import string

from selfloop import model as mdl
from selfloop.config import load_params
from selfloop.loop import run
from selfloop.records import read_jsonl

TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def test_loop_runs_on_a_local_chat_model(tmp_path, tiny_overrides):
    tok = mdl.build_char_tokenizer(string.printable)
    tok.chat_template = TEMPLATE
    model = mdl.build_gpt2(tok, n_layer=1, n_embd=32, n_head=2, n_positions=320, seed=0)
    mdl.save(model, tok, tmp_path / "mine")

    params = load_params(None, [*tiny_overrides, f"model.path={tmp_path / 'mine'}", "run.control=false",
                                "generate.max_new_tokens=24"])
    results = run(params)
    assert len(results["loop"]) == 1
    root = tmp_path / "run"
    ref = read_jsonl(root / "data" / "reference.jsonl")[0]
    assert ref["prompt"].startswith("[user] Using the numbers") and ref["prompt"].endswith("[assistant] ")
    assert ref["response"].startswith("<answer>") and ref["response"].endswith("</answer>")
    cand = read_jsonl(root / "gen_001" / "candidates.jsonl")
    assert cand and all(c["prompt"].startswith("[user] ") for c in cand)
    loaded, _ = mdl.load(root / "gen_001" / "model")
    assert loaded.config.n_positions == 320


def test_a_tokenizer_that_cannot_write_the_reference_is_refused_before_training(tmp_path, tiny_overrides):
    import pytest

    from selfloop.config import ConfigError

    tok = mdl.build_char_tokenizer("0123456789+-*/=, >:")  # the default's old alphabet: no brackets
    assert mdl.unwritable(tok, ["1+2", "(1+2)*3", "4*(5-1)"]) == (2, "()", "(1+2)*3")
    model = mdl.build_gpt2(tok, n_layer=1, n_embd=16, n_head=2, n_positions=64, seed=0)
    mdl.save(model, tok, tmp_path / "old")
    params = load_params(None, [*tiny_overrides, f"model.path={tmp_path / 'old'}", "run.control=false"])
    refused = r"cannot write \d+ of the 180 reference examples: it does not know '\(\)'"
    with pytest.raises(ConfigError, match=refused):
        run(params)
    assert not (tmp_path / "run" / "gen_000" / "model").exists()  # nothing was trained on them
