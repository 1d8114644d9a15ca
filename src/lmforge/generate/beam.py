"""Beam search: keep the k likeliest partial continuations instead of one.

    num_beams 2, prompt "The": beams ("The cat" -0.9, "The dog" -1.2)
    -> score every (beam, next token) pair: log p(beam) + log p(token | beam)
    -> keep the 2 best that continue ("The cat sat" -1.5, "The dog ran" -1.9); a best pair that ends
       in end-of-text becomes a finished hypothesis, scored sum(log p) / new_length ** length_penalty
    -> stop when num_beams hypotheses are finished (early_stopping=True), then return the best
       ``num_return_sequences`` of them, best first.

The rules are Hugging Face's (``GenerationMixin._beam_search``, transformers 4.50+), so the same
settings give the same ids (tests/generate/test_beam.py checks it):
- each step considers the 2 * num_beams best candidates of a prompt; only those among the first
  num_beams that end (end-of-text, a stop string, or max_new_tokens reached) become hypotheses, and
  the best num_beams that do not end continue;
- new_length counts the generated tokens, end-of-text included; length_penalty > 0 favours longer;
- early_stopping True: done when num_beams hypotheses exist. False: also stop once the best running
  beam, scored at its current length, cannot beat the worst hypothesis (HF's heuristic). "never":
  the same test with the best running beam scored at max_new_tokens when length_penalty > 0;
- processors (repetition penalty, min new tokens) act on log-probabilities, and beams are scored
  with the processed ones; ``logprob`` in the result is the unprocessed model log-probability.

Beams live in a (B, num_beams, ...) layout; after each step the model's state is reordered so that
row i continues the beam it extends (for GPT: the KV cache rows are copied, not recomputed).
"""

from __future__ import annotations

import torch

from lmforge.generate.config import GenerationConfig
from lmforge.generate.processors import apply_processors
from lmforge.generate.result import EOS, RUNNING, STOP, Decoded
from lmforge.generate.step import StepModel
from lmforge.generate.stopping import StopStrings

NEG = -1.0e9  # a score that takes a candidate out of the running; HF's constant, for identical ties


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tensor (B, K, ...) and index (B, J) -> (B, J, ...): the beams index picks, per prompt."""
    index = index.view(*index.shape, *([1] * (tensor.dim() - 2)))
    return torch.take_along_dim(tensor, index, dim=1)


@torch.inference_mode()
def beam_search(
    model: StepModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: GenerationConfig,
    *,
    stop: StopStrings | None = None,
) -> Decoded:
    """The best ``config.num_return_sequences`` hypotheses of each left-padded prompt (B, P), best first.

    Returns B * num_return_sequences rows, prompt-major."""
    B, P = input_ids.shape
    n, K, R = config.max_new_tokens, config.num_beams, config.num_return_sequences
    device, lp, early = input_ids.device, config.length_penalty, config.early_stopping
    eos, filler = config.eos_id, config.eos_id if config.eos_id is not None else 0
    if n == 0:
        empty = torch.zeros(B * R, 0, dtype=torch.long, device=device)
        zeros = torch.zeros(B * R, dtype=torch.long, device=device)
        return Decoded(empty, empty.float(), zeros, zeros, torch.zeros(B * R, device=device))

    running = torch.full((B, K, P + n), filler, dtype=torch.long, device=device)
    running[:, :, :P] = input_ids[:, None]
    running_logprobs = torch.zeros(B, K, n, device=device)  # unprocessed log p of each new token
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = NEG  # all beams start equal: only the first one's continuations count
    done_ids, done_logprobs = running.clone(), running_logprobs.clone()
    done_scores = torch.full((B, K), NEG, device=device)
    done_flag = torch.zeros(B, K, dtype=torch.bool, device=device)  # slot holds a real hypothesis
    done_length = torch.zeros(B, K, dtype=torch.long, device=device)
    done_finish = torch.zeros(B, K, dtype=torch.long, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    width = 2 * K  # with one end-of-text id, at least K of 2K candidates continue
    first_k = torch.arange(width, device=device) < K
    batch_offset = torch.arange(B, device=device)[:, None] * K

    processors = config.processors(P)
    logits, state = model.start(input_ids, attention_mask, max_new_tokens=n, copies=K)  # (B * K, V)
    V = logits.shape[-1]
    for t in range(n):
        raw = logits.log_softmax(dim=-1)  # (B * K, V)
        processed = apply_processors(processors, running.view(B * K, -1)[:, : P + t], raw)
        total = (processed.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        top_scores, top_index = torch.topk(total, width, dim=-1)  # (B, 2K), best first
        beam, token = top_index // V, top_index % V
        candidates = _gather(running, beam)  # (B, 2K, P + n)
        candidates[:, :, P + t] = token
        candidate_logprobs = _gather(running_logprobs, beam)
        candidate_logprobs[:, :, t] = _gather(raw.view(B, K, V), beam).gather(2, token[..., None])[..., 0]

        ends = torch.full_like(token, RUNNING)
        if eos is not None:
            ends.masked_fill_(token == eos, EOS)
        if stop:
            hit = stop.hits(
                candidates[:, :, P : P + t + 1].reshape(B * width, -1), (ends == RUNNING).flatten()
            )
            ends.masked_fill_(hit.view(B, width), STOP)
        done = (ends != RUNNING) | (t == n - 1)

        # the best K candidates that did not end run on
        alive_scores = top_scores + done.float() * NEG
        keep = torch.topk(alive_scores, K, dim=-1).indices  # (B, K)
        running, running_scores = _gather(candidates, keep), _gather(alive_scores, keep)
        running_logprobs, source = _gather(candidate_logprobs, keep), _gather(beam, keep)

        # candidates among the first K that ended become hypotheses if they beat the worst kept one
        new_done = done & first_k
        scores = top_scores / ((t + 1) ** lp)
        scores += (done_flag.all(dim=-1, keepdim=True) & (early is True)).float() * NEG
        scores += (~improvable).float() * NEG
        scores += (~new_done) * NEG
        best = torch.topk(torch.cat([done_scores, scores], dim=1), K, dim=-1).indices
        done_ids = _gather(torch.cat([done_ids, candidates], dim=1), best)
        done_scores = _gather(torch.cat([done_scores, scores], dim=1), best)
        done_flag = _gather(torch.cat([done_flag, new_done], dim=1), best)
        done_logprobs = _gather(torch.cat([done_logprobs, candidate_logprobs], dim=1), best)
        done_length = _gather(torch.cat([done_length, torch.full_like(token, t + 1)], dim=1), best)
        done_finish = _gather(torch.cat([done_finish, ends], dim=1), best)
        if t == n - 1:
            break

        # can a running beam still beat the worst hypothesis? (HF's early-stop heuristic)
        best_length = n if (early == "never" and lp > 0) else t + 1
        best_possible = running_scores[:, :1] / (best_length**lp)
        worst_done = torch.where(done_flag, done_scores.min(dim=-1, keepdim=True).values, NEG)
        improvable &= (best_possible > worst_done).any(dim=-1, keepdim=True)
        all_full = bool(done_flag.all()) and early is True
        if not bool(improvable.any()) or all_full or bool(done.all()):
            break
        state = model.reorder(state, (source + batch_offset).flatten())
        logits, state = model.step(running[:, :, P + t].flatten(), state)

    return Decoded(
        ids=done_ids[:, :R, P:].reshape(B * R, n),
        token_logprobs=done_logprobs[:, :R].reshape(B * R, n),
        lengths=done_length[:, :R].reshape(B * R),
        finish=done_finish[:, :R].reshape(B * R),
        scores=done_scores[:, :R].reshape(B * R),
    )
