import math

import pytest

from guardreasoner.confidence import apply_threshold, attach_confidences, positive_probability
from guardreasoner.parser import parse
from guardreasoner.results import UNCALIBRATED


def test_positive_probability_pools_tokens_that_begin_each_label():
    top = {" harmful": math.log(0.6), " harm": math.log(0.1), " unh": math.log(0.2), " un": math.log(0.05),
           " the": math.log(0.05)}
    assert positive_probability("prompt_harmfulness", " ", top) == pytest.approx(0.7 / 0.95)
    assert positive_probability("response_refusal", " ", {" refusal": math.log(0.3), " compliance": math.log(0.1)}) == \
        pytest.approx(0.75)
    assert positive_probability("prompt_harmfulness", " ", {" the": 0.0}) is None


def test_confidence_is_attached_at_the_verdict_token():
    tokens = ["Answers", ":", " \n", "Request", ":", " harmful", "\n", "Completion", ":", " None"]
    top = [{t: 0.0} for t in tokens]
    top[5] = {" harmful": math.log(0.8), " unh": math.log(0.2)}
    text = "".join(tokens)
    parsed = parse(text)
    attach_confidences(text, parsed.verdicts, tokens, top)
    assert parsed.verdicts["prompt_harmfulness"].p_positive == pytest.approx(0.8)
    assert parsed.verdicts["prompt_harmfulness"].confidence == pytest.approx(0.8)
    assert parsed.verdicts["prompt_harmfulness"].calibration == UNCALIBRATED  # said, not silently raw
    assert parsed.verdicts["response_refusal"].p_positive is None  # "None" has no label pair
    assert parsed.verdicts["response_refusal"].calibration is None


def test_threshold_makes_the_guard_stricter_or_looser():
    parsed = parse("Answers: \nRequest: unharmful")
    verdict = parsed.verdicts["prompt_harmfulness"]
    verdict.p_positive = 0.3
    assert verdict.confidence == pytest.approx(0.7)
    apply_threshold(verdict, 0.5)
    assert verdict.label == "unharmful"
    apply_threshold(verdict, 0.25)  # stricter: flag at 25% harmful
    assert verdict.label == "harmful"


def test_confidence_equals_the_models_own_probability(taught_model_dir):
    """Recompute P(label token) with a forward pass at the verdict position and compare."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guardreasoner.backends import SamplingConfig
    from guardreasoner.backends.transformers_backend import TransformersBackend
    from guardreasoner.guard import Guard
    from guardreasoner.template import user_turn
    from tests.tiny_models import HARMFUL_REQUEST

    guard = Guard(TransformersBackend(str(taught_model_dir)),
                  sampling=SamplingConfig(max_new_tokens=160, top_logprobs=20))
    result = guard.classify([HARMFUL_REQUEST])[0]
    verdict = result.verdicts["prompt_harmfulness"]
    assert verdict.label == "harmful" and verdict.p_positive is not None

    tokenizer = AutoTokenizer.from_pretrained(taught_model_dir)
    model = AutoModelForCausalLM.from_pretrained(taught_model_dir)
    before = result.output[: verdict.offset].rstrip(" ")
    ids = tokenizer(user_turn(HARMFUL_REQUEST), return_tensors="pt")["input_ids"]
    ids = torch.cat([ids, tokenizer(before, add_special_tokens=False, return_tensors="pt")["input_ids"]], dim=1)
    with torch.no_grad():
        probs = model(ids).logits[0, -1].softmax(-1)
    vocab = {tokenizer.decode([i]): i for i in range(len(tokenizer))}
    mass = {label: sum(float(probs[i]) for text, i in vocab.items()
                       if text.startswith(" ") and len(text) > 1 and label.startswith(text[1:].lower()))
            for label in ("harmful", "unharmful")}
    top20 = set(probs.topk(20).indices.tolist())
    # Only tokens among the top 20 were seen by the guard; compare on that set.
    seen = {label: sum(float(probs[i]) for text, i in vocab.items() if i in top20 and text.startswith(" ")
                       and len(text) > 1 and label.startswith(text[1:].lower()))
            for label in ("harmful", "unharmful")}
    assert mass["harmful"] > 0
    assert verdict.p_positive == pytest.approx(seen["harmful"] / (seen["harmful"] + seen["unharmful"]), abs=1e-4)


def _answers_tokens(request_label: str = " harmful"):
    tokens = ["Answers", ":", " \n", "Request", ":", request_label, "\n", "Completion", ":", " None"]
    top = [{t: 0.0} for t in tokens]
    top[5] = {" harmful": math.log(0.8), " unh": math.log(0.2)}
    return tokens, top


@pytest.mark.parametrize("stop_token", ["<|eot_id|>", "<|im_end|>", "</s>", "<|end_of_text|>"])
def test_confidence_survives_the_stop_token_vllm_keeps(stop_token):
    """vLLM's token_ids end with the stop token and its logprob entry is decoded with special tokens, so the
    joined tokens are the text plus that suffix (vllm serve's completions logprobs too)."""
    tokens, top = _answers_tokens()
    text = "".join(tokens)
    parsed = parse(text)
    attach_confidences(text, parsed.verdicts, tokens + [stop_token], top + [{stop_token: 0.0}])
    assert parsed.verdicts["prompt_harmfulness"].p_positive == pytest.approx(0.8)


def test_confidence_survives_per_token_decoding_that_differs_from_the_text():
    """A character split over two tokens decodes per token as replacement characters: the lengths differ
    both before the verdict and (with a stop token) after it; the verdict is found by the text around it."""
    tokens, top = _answers_tokens()
    text = "Café.\n" + "".join(tokens) + "\nDone é"
    tokens = ["Caf", "\ufffd", "\ufffd", ".\n"] + tokens + ["\nDone", " \ufffd", "\ufffd", "<|eot_id|>"]
    top = [{t: 0.0} for t in tokens[:4]] + top + [{t: 0.0} for t in tokens[-4:]]
    parsed = parse(text)
    attach_confidences(text, parsed.verdicts, tokens, top)
    assert parsed.verdicts["prompt_harmfulness"].p_positive == pytest.approx(0.8)
