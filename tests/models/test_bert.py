"""BERT against independent truths: Hugging Face's BertModel / BertForMaskedLM /
BertForSequenceClassification on the same random weights, the published parameter count,
padding that changes nothing, a padded key's zero attention weight, and a hand-computed MLM loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.interop.bert import from_hf_names
from lmforge.models.bert import BERT, BERTConfig
from lmforge.models.registry import build_model, preset_config
from lmforge.train.objectives import masked_language_model_loss

transformers = pytest.importorskip("transformers")

VOCAB, BLOCK = 53, 32


def tiny(**overrides) -> BERT:
    torch.manual_seed(0)
    config = BERTConfig(
        vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=4, n_embd=32, dropout=0.0, **overrides
    )
    return BERT(config).eval()


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (LayerNorms and biases included), so no mapping error hides behind
    an initialisation of ones or zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def hf_config(**overrides):
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=BLOCK,
        type_vocab_size=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **overrides,
    )


def lmforge_twin(hf_model, **heads) -> BERT:
    """lmforge's BERT with ``hf_model``'s weights, through the conversion's name mapping."""
    c = hf_model.config
    config = BERTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_embd=c.hidden_size,
        mlp_hidden=c.intermediate_size,
        type_vocab_size=c.type_vocab_size,
        dropout=0.0,
        norm_eps=c.layer_norm_eps,
        **heads,
    )
    model = BERT(config).eval()
    state = from_hf_names(hf_model.state_dict())
    if config.mlm_head:
        state["lm_head.weight"] = state["wte.weight"]
    model.load_state_dict(state, strict=True)  # every weight named, none left over
    return model


def batch(seed: int = 1, B: int = 3, T: int = 17):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (B, T), generator=generator)
    segments = torch.randint(0, 3, (B, T), generator=generator)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 11:] = 0  # right padding
    mask[2, 5:] = 0
    return ids, segments, mask


def test_bert_base_has_the_published_parameter_count_as_transformers_counts_it():
    family, config = preset_config("bert-base")
    with torch.device("meta"):
        encoder = build_model(family, {**config, "vocab_size": 30522, "mlm_head": False})
        masked = build_model(family, {**config, "vocab_size": 30522, "pooler": False})
        hf_encoder = transformers.BertModel(transformers.BertConfig())
        hf_masked = transformers.BertForMaskedLM(transformers.BertConfig())
    assert encoder.num_parameters() == hf_encoder.num_parameters() == 109_482_240  # "110M" (Devlin et al.)
    assert masked.num_parameters() == hf_masked.num_parameters()
    # the tables: 30522 tokens + 512 positions + 2 segments, x 768
    assert encoder.num_parameters(exclude_embeddings=True) == 109_482_240 - (30522 + 512 + 2) * 768


@pytest.mark.parametrize("preset", ["bert-nano", "bert-mini", "bert-base"])
def test_presets_are_masked_encoders_that_decode_nothing(preset):
    family, config = preset_config(preset)
    with torch.device("meta"):
        model = build_model(family, {**config, "vocab_size": 100})
    assert model.lm_kind == "masked" and model.decoding == "none" and model.has_attention_maps
    assert model.lm_head.weight is model.wte.weight  # the MLM decoder is the token table


def test_padding_changes_no_hidden_state_of_the_real_tokens():
    model = tiny()
    randomize(model)
    generator = torch.Generator().manual_seed(3)
    sentence = torch.randint(0, VOCAB, (1, 9), generator=generator)
    alone, _ = model.encode(sentence, attention_mask=torch.ones(1, 9, dtype=torch.long))
    for pad in (1, 7, 20):
        padded = torch.cat([sentence, torch.randint(0, VOCAB, (1, pad), generator=generator)], dim=1)
        mask = torch.cat([torch.ones(1, 9), torch.zeros(1, pad)], dim=1).long()
        hidden, _ = model.encode(padded, attention_mask=mask)
        torch.testing.assert_close(hidden[:, :9], alone, rtol=0, atol=1e-5)
        unmasked, _ = model.encode(padded)  # without the mask the padding does leak in
        assert (unmasked[:, :9] - alone).abs().max() > 1e-3


def test_a_padded_key_gets_zero_attention_weight():
    model = tiny()
    randomize(model)
    ids, segments, mask = batch()
    attentions = model(
        ids, attention_mask=mask, token_type_ids=segments % 2, output_attentions=True
    ).attentions
    for weights in attentions:  # (B, nh, T, T)
        assert torch.all(weights[1, :, :, 11:] == 0) and torch.all(weights[2, :, :, 5:] == 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
        assert (weights[0] > 0).all()  # no padding, bidirectional: every key seen, future ones too


def test_sdpa_path_equals_reference_attention():
    model = tiny()
    randomize(model)
    ids, segments, mask = batch()
    for attention_mask in (None, mask):
        fast = model(ids, attention_mask=attention_mask, token_type_ids=segments % 2)
        reference = model(
            ids, attention_mask=attention_mask, token_type_ids=segments % 2, output_attentions=True
        )
        torch.testing.assert_close(fast.hidden_states, reference.hidden_states, rtol=0, atol=1e-5)


@pytest.mark.parametrize("hf_class", ["BertModel", "BertForMaskedLM", "BertForSequenceClassification"])
def test_matches_transformers_on_random_weights(hf_class):
    torch.manual_seed(0)
    hf = getattr(transformers, hf_class)(hf_config(num_labels=3)).eval()
    randomize(hf, seed=4)
    if hf_class == "BertForMaskedLM":
        hf.tie_weights()
    heads = {
        "BertModel": {"mlm_head": False},
        "BertForMaskedLM": {"pooler": False},
        "BertForSequenceClassification": {"mlm_head": False, "num_labels": 3},
    }[hf_class]
    model = lmforge_twin(hf, **heads)
    ids, segments, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True)
        hidden, _ = model.encode(ids, attention_mask=mask, token_type_ids=segments)
    torch.testing.assert_close(hidden, expected.hidden_states[-1], rtol=0, atol=1e-5)  # padding rows too
    if hf_class == "BertModel":
        torch.testing.assert_close(model.pool(hidden), expected.pooler_output, rtol=0, atol=1e-5)
    elif hf_class == "BertForMaskedLM":
        logits = model(ids, attention_mask=mask, token_type_ids=segments).logits
        torch.testing.assert_close(logits, expected.logits, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(model.classify(hidden), expected.logits, rtol=0, atol=1e-5)


def test_mlm_loss_counts_only_the_labelled_positions():
    model = tiny()
    ids, _, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 7], labels[2, 0] = 5, 9, 11  # three masked positions
    out = model(ids, attention_mask=mask, labels=labels)
    picked = out.logits[[0, 1, 2], [3, 7, 0]]  # (3, vocab): the labelled positions only
    expected = F.cross_entropy(picked, torch.tensor([5, 9, 11]))
    torch.testing.assert_close(out.loss, expected)
    summed = model(ids, attention_mask=mask, labels=labels, reduction="sum").loss
    torch.testing.assert_close(summed, expected * 3)
    # masked-LM training runs the head at the labelled positions only: same logits, same loss
    sparse = model(ids, attention_mask=mask, labels=labels, reduction="sum", labelled_logits_only=True)
    torch.testing.assert_close(sparse.logits, picked, rtol=0, atol=1e-6)
    torch.testing.assert_close(sparse.loss, summed, rtol=1e-6, atol=1e-6)
    loss, count = masked_language_model_loss(
        model, {"input_ids": ids, "attention_mask": mask, "labels": labels}
    )
    assert count == 3
    torch.testing.assert_close(loss, summed, rtol=1e-6, atol=1e-6)
    loss.backward()  # gradients reach the encoder through the gathered rows
    assert model.h[0].attn.c_attn.weight.grad.abs().sum() > 0


def test_heads_a_converted_checkpoint_lacks_are_refused_with_a_reason():
    model = tiny(mlm_head=False, pooler=False)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="no masked-LM head"):
        model(ids)
    with pytest.raises(ValueError, match="no pooler"):
        model.pool(model.encode(ids)[0])
    with pytest.raises(ValueError, match="needs pooler=True"):
        BERTConfig(pooler=False, num_labels=2)
    with pytest.raises(ValueError, match="exceeds block_size"):
        tiny().encode(torch.zeros(1, BLOCK + 1, dtype=torch.long))


def test_bf16_matmul_path_matches_the_reference_and_ignores_padding(force_matmul_attention):
    """The CPU bf16 attention path (a fused additive mask) carries over to the encoder unchanged."""
    model = tiny()
    randomize(model)
    model = model.to(torch.bfloat16)
    ids, segments, mask = batch()
    fast, _ = model.encode(ids, attention_mask=mask, token_type_ids=segments % 2)
    reference, _ = model.encode(ids, attention_mask=mask, token_type_ids=segments % 2, output_attentions=True)
    real = mask.bool()
    torch.testing.assert_close(fast[real].float(), reference[real].float(), rtol=0, atol=3e-2)
    alone, _ = model.encode(ids[2:, :5], token_type_ids=segments[2:, :5] % 2)  # row 2 without its padding
    torch.testing.assert_close(fast[2, :5].float(), alone[0].float(), rtol=0, atol=3e-2)


def test_sequence_logits_computing_only_cls_in_the_last_block_equal_the_full_encoder():
    model = tiny(num_labels=3, mlm_head=False)
    randomize(model)
    ids, segments, mask = batch()
    segments = segments % 2  # two segment types
    full = model.classify(model.encode(ids, mask, segments)[0])
    fast = model.sequence_logits(ids, mask, segments)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5)
    # and the same gradients: fine-tuning trains the same function
    grads = []
    for logits in (
        model.classify(model.encode(ids, mask, segments)[0]),
        model.sequence_logits(ids, mask, segments),
    ):
        model.zero_grad()
        F.cross_entropy(logits, torch.tensor([0, 2, 1])).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
