"""The Transformer encoder-decoder (models/seq2seq.py): step-by-step decoding equals one forward,
source padding changes nothing, a row of a batch decodes as it does alone (greedy and beam),
cross-attention covers the real source tokens only, and a tiny model learns to copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.generate import GenerationConfig, generate
from lmforge.generate.seq2seq_step import EncoderDecoderStepModel, pad_sources
from lmforge.models.protocol import LanguageModel, LMOutput, NeuralLM
from lmforge.models.registry import build_model
from lmforge.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer, marian_sinusoids

PAD, START, EOS = 0, 1, 2
VOCAB = 37

VARIANTS = {
    # BART: post-norm, learned positions at offset 2, LayerNorm on the embeddings, erf GELU, logit bias
    "bart": {
        "pos_encoding": "learned",
        "position_offset": 2,
        "layernorm_embedding": True,
        "mlp": "gelu_exact",
        "final_logits_bias": True,
    },
    # Marian: sinusoidal positions, scaled embeddings, SiLU, separate source vocabulary
    "marian": {
        "pos_encoding": "sinusoidal",
        "scale_embedding": True,
        "mlp": "silu",
        "shared_vocab": False,
        "source_vocab_size": 41,
        "final_logits_bias": True,
    },
    # pre-norm with final norms, ReLU, untied head
    "prenorm": {"norm_first": True, "mlp": "relu", "tie_embeddings": False, "pos_encoding": "learned"},
}


def tiny(variant: str = "bart", seed: int = 0, std: float = 0.3, **overrides) -> Seq2SeqTransformer:
    """A 2+2-layer model whose weights are redrawn wide (std), so its logits are peaked, tie-free."""
    torch.manual_seed(seed)
    settings = {
        "vocab_size": VOCAB,
        "block_size": 24,
        "target_block_size": 20,
        "n_encoder_layer": 2,
        "n_decoder_layer": 2,
        "n_head": 4,
        "n_embd": 32,
        "dropout": 0.0,
        "decoder_start_token_id": START,
        **VARIANTS[variant],
        **overrides,
    }
    model = Seq2SeqTransformer(Seq2SeqConfig(**settings)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, std)
        if model.config.final_logits_bias:
            model.final_logits_bias.normal_(0.0, 1.0)
    return model


def sources(model: Seq2SeqTransformer, lengths=(5, 9, 3), seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.source_vocab_size or model.config.vocab_size
    return [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]


def padded_batch(model, lengths=(5, 9, 3), extra: int = 0, pad: int = PAD):
    src = sources(model, lengths)
    ids, mask = pad_sources(src, pad)
    if extra:
        ids = torch.cat([ids, torch.full((ids.shape[0], extra), pad)], dim=1)
        mask = torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], dim=1)
    return ids, mask


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_model_meets_the_protocol(variant):
    model = tiny(variant)
    assert isinstance(model, LanguageModel) and isinstance(model, NeuralLM)
    assert model.family == "seq2seq" and model.lm_kind == "seq2seq" and model.decoding == "encoder_decoder"
    assert model.context_limit == 24 and model.target_limit == 20
    assert type(build_model("seq2seq", model.config.to_dict())) is Seq2SeqTransformer
    assert model.describe() == "encoder-decoder, 2+2 layers x 32 wide, context 24"


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_equals_one_forward(variant):
    model = tiny(variant)
    ids, mask = padded_batch(model)
    target = torch.randint(3, VOCAB, (3, 7), generator=torch.Generator().manual_seed(2))
    decoder_ids = torch.cat([torch.full((3, 1), START), target], dim=1)  # (3, 8)
    with torch.no_grad():
        full = model(ids, mask, decoder_ids).logits  # (3, 8, V)
        state = model.start_decoding(model.encode(ids, mask), mask, max_length=8)
        steps = [model.decode(decoder_ids[:, t : t + 1], state)[0] for t in range(8)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
        # chunks of several tokens after a cached past too
        state = model.start_decoding(model.encode(ids, mask), mask, max_length=8)
        first, _ = model.decode(decoder_ids[:, :3], state)
        rest, _ = model.decode(decoder_ids[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_source_padding_changes_no_output(variant):
    model = tiny(variant)
    ids, mask = padded_batch(model)
    wide_ids, wide_mask = padded_batch(model, extra=6, pad=5)  # more columns, another pad id
    decoder_ids = torch.tensor([[START, 7, 8, 9]] * 3)
    with torch.no_grad():
        narrow = model(ids, mask, decoder_ids).logits
        wide = model(wide_ids, wide_mask, decoder_ids).logits
    torch.testing.assert_close(wide, narrow, atol=1e-5, rtol=1e-5)  # float rounding of wider sums
    config = GenerationConfig(strategy="greedy", max_new_tokens=10, eos_id=EOS)
    one = generate(EncoderDecoderStepModel(model, ids, mask), [[START]] * 3, config)
    other = generate(EncoderDecoderStepModel(model, wide_ids, wide_mask), [[START]] * 3, config)
    assert [r[0].ids for r in one] == [r[0].ids for r in other]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_row_of_a_batch_decodes_as_it_does_alone(variant, strategy):
    model = tiny(variant, std=0.5)
    src = sources(model, (5, 9, 3, 7))
    config = GenerationConfig(
        strategy=strategy, max_new_tokens=12, num_beams=3, eos_id=EOS, num_return_sequences=1
    )
    ids, mask = pad_sources(src, PAD)
    batched = generate(EncoderDecoderStepModel(model, ids, mask), [[START]] * len(src), config)
    alone = []
    for source in src:
        one_ids, one_mask = pad_sources([source], PAD)
        alone.append(generate(EncoderDecoderStepModel(model, one_ids, one_mask), [[START]], config)[0])
    assert [r[0].ids for r in batched] == [r[0].ids for r in alone]
    assert any(len(r[0].ids) > 1 for r in alone)  # something was decoded
    for b, a in zip(batched, alone, strict=True):
        assert b[0].logprob == pytest.approx(a[0].logprob, rel=1e-4, abs=1e-4)


def test_greedy_decoding_is_the_argmax_of_the_uncached_forward():
    """An independent greedy loop over full forwards picks the same ids as generate's cached decode."""
    model = tiny("bart", std=0.5)
    ids, mask = pad_sources(sources(model, (6,)), PAD)
    decoded = [START]
    with torch.no_grad():
        for _ in range(10):
            logits = model(ids, mask, torch.tensor([decoded])).logits[0, -1]
            decoded.append(int(logits.argmax()))
            if decoded[-1] == EOS:
                break
    config = GenerationConfig(strategy="greedy", max_new_tokens=10, eos_id=EOS)
    result = generate(EncoderDecoderStepModel(model, ids, mask), [[START]], config)[0][0]
    assert result.ids == [t for t in decoded[1:] if t != EOS]


def test_cross_attention_covers_the_real_source_tokens_only():
    model = tiny("bart")
    ids, mask = padded_batch(model)
    decoder_ids = torch.tensor([[START, 7, 8, 9, 10]] * 3)
    with torch.no_grad():
        out = model(ids, mask, decoder_ids, output_attentions=True)
    assert len(out.cross_attentions) == 2 and len(out.attentions) == 2
    for weights in out.cross_attentions:
        assert weights.shape == (3, 4, 5, ids.shape[1])
        real = mask[:, None, None, :].bool().expand_as(weights)
        assert torch.all(weights[~real] == 0)  # padding: exactly nothing
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 5))
    for weights in out.attentions:  # causal: no position sees a later one
        assert weights.shape == (3, 4, 5, 5)
        assert torch.all(weights.triu(diagonal=1) == 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 5))
    with torch.no_grad():  # the reference path computes the same logits as SDPA
        torch.testing.assert_close(model(ids, mask, decoder_ids).logits, out.logits, atol=1e-5, rtol=0)


def test_the_content_of_masked_source_positions_is_never_read():
    model = tiny("marian")
    ids, mask = padded_batch(model)
    scrambled = ids.masked_fill(mask == 0, 17)
    decoder_ids = torch.tensor([[START, 4, 5]] * 3)
    with torch.no_grad():
        torch.testing.assert_close(
            model(scrambled, mask, decoder_ids).logits, model(ids, mask, decoder_ids).logits, atol=0, rtol=0
        )


def test_the_loss_is_cross_entropy_over_labelled_positions():
    model = tiny("prenorm")
    ids, mask = padded_batch(model)
    labels = torch.tensor([[5, 6, EOS, -100], [7, EOS, -100, -100], [8, 9, 10, EOS]])
    out = model(ids, mask, model.shift_right(labels), labels=labels, reduction="sum")
    keep = labels != -100
    expected = F.cross_entropy(out.logits[keep], labels[keep], reduction="sum")
    torch.testing.assert_close(out.loss, expected)
    assert model.shift_right(labels)[1].tolist() == [START, 7, EOS, START]
    mean = model(ids, mask, labels=labels).loss  # decoder_input_ids default: the labels shifted right
    torch.testing.assert_close(mean, expected / keep.sum())
    assert isinstance(out, LMOutput) and out.logits.shape == (3, 4, VOCAB)


def test_cross_keys_and_values_are_projected_once_per_source(monkeypatch):
    from lmforge.models.attention import CrossAttention

    model = tiny("bart")
    calls = []
    original = CrossAttention.project_memory
    monkeypatch.setattr(
        CrossAttention,
        "project_memory",
        lambda self, memory: calls.append(memory.shape) or original(self, memory),
    )
    ids, mask = padded_batch(model)
    config = GenerationConfig(strategy="beam", max_new_tokens=8, num_beams=4, eos_id=EOS)
    generate(EncoderDecoderStepModel(model, ids, mask), [[START]] * 3, config)
    assert calls == [(3, ids.shape[1], 32)] * 2  # once per decoder layer, for the 3 sources


def test_reordering_expands_rows_and_moves_caches():
    model = tiny("bart")
    ids, mask = padded_batch(model)
    with torch.no_grad():
        state = model.start_decoding(model.encode(ids, mask), mask, max_length=4)
        model.decode(torch.tensor([[START, 5]] * 3), state)
        state = model.reorder_decoding(state, torch.tensor([2, 2, 0, 1, 1]))  # 3 rows -> 5
        logits, _ = model.decode(torch.tensor([[6]] * 5), state)
        alone = [
            model(ids[[i]], mask[[i]], torch.tensor([[START, 5, 6]])).logits[0, -1] for i in (2, 2, 0, 1, 1)
        ]
    torch.testing.assert_close(logits[:, -1], torch.stack(alone), atol=1e-5, rtol=0)


def test_lengths_past_the_position_tables_are_refused():
    model = tiny("bart")
    with pytest.raises(ValueError, match="source of 25 tokens exceeds"):
        model.encode(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="target length of 20"):
        model.start_decoding(model.encode(torch.ones(1, 3, dtype=torch.long)), None, max_length=21)


def test_config_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="divisible"):
        Seq2SeqConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="shared_vocab"):
        Seq2SeqConfig(vocab_size=10, source_vocab_size=12)
    with pytest.raises(ValueError, match="unknown mlp"):
        Seq2SeqConfig(mlp="swiglu")
    assert Seq2SeqConfig(n_encoder_layer=3, n_decoder_layer=2).n_layer == 5


def test_marian_sinusoids_are_sines_then_cosines_of_vaswanis_angles():
    table = marian_sinusoids(7, 8)
    pos, i = 5, 2
    angle = pos / 10000 ** (2 * i / 8)
    assert table[pos, i].item() == pytest.approx(torch.tensor(angle).sin().item(), abs=1e-7)
    assert table[pos, 4 + i].item() == pytest.approx(torch.tensor(angle).cos().item(), abs=1e-7)
    assert torch.all(table[0, :4] == 0) and torch.all(table[0, 4:] == 1)


def test_parameters_are_counted_once_with_the_tables_named():
    model = tiny("marian")
    C, V, S = 32, VOCAB, 41
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    # marian: target table (tied head) and source table; sinusoids are not parameters
    assert model.num_parameters() - model.num_parameters(exclude_embeddings=True) == (V + S) * C
    untied = tiny("prenorm")  # learned positions at no offset, and an untied head
    assert untied.num_parameters() - untied.num_parameters(exclude_embeddings=True) == (2 * V + 24 + 20) * C


# --- learning: a tiny model copies its source --------------------------------------------------


def copy_batch(generator: torch.Generator, batch: int, symbols: int = 10, max_len: int = 6):
    """Random sources of 2..max_len symbols (ids 3..3+symbols-1); the target is the source."""
    lengths = torch.randint(2, max_len + 1, (batch,), generator=generator).tolist()
    src = [torch.randint(3, 3 + symbols, (n,), generator=generator).tolist() for n in lengths]
    ids, mask = pad_sources(src, PAD)
    width = max(lengths) + 1
    decoder = torch.full((batch, width), PAD)
    labels = torch.full((batch, width), -100)
    for row, s in enumerate(src):
        decoder[row, : len(s) + 1] = torch.tensor([START, *s])
        labels[row, : len(s) + 1] = torch.tensor([*s, EOS])
    return src, {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder, "labels": labels}


def test_a_tiny_model_learns_to_copy():
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        vocab_size=13,
        block_size=8,
        target_block_size=8,
        n_encoder_layer=1,
        n_decoder_layer=1,
        n_head=2,
        n_embd=32,
        mlp_hidden=64,
        dropout=0.0,
        norm_first=True,
        pos_encoding="learned",
        decoder_start_token_id=START,
    )
    model = Seq2SeqTransformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        _, batch = copy_batch(generator, 32)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    src, batch = copy_batch(torch.Generator().manual_seed(99), 200)
    config = GenerationConfig(strategy="greedy", max_new_tokens=7, eos_id=EOS)
    results = generate(
        EncoderDecoderStepModel(model, batch["input_ids"], batch["attention_mask"]), [[START]] * 200, config
    )
    exact = sum(r[0].ids == s for r, s in zip(results, src, strict=True)) / len(src)
    assert exact >= 0.99


# --- presets -----------------------------------------------------------------------------------


def on_meta(preset: str, **overrides) -> Seq2SeqTransformer:
    from lmforge.models.registry import preset_config

    family, config = preset_config(preset, **overrides)
    with torch.device("meta"):
        return build_model(family, config)


def test_full_size_presets_count_the_published_checkpoints_parameters():
    """bart-base equals transformers' BartForConditionalGeneration of facebook/bart-base's shape;
    marian-base equals MarianMTModel of opus-mt-en-de's shape less its two frozen sinusoid tables."""
    transformers = pytest.importorskip("transformers")
    bart = transformers.BartConfig(
        vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
        decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
    )  # fmt: skip
    marian = transformers.MarianConfig(
        vocab_size=58101, decoder_vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
        max_position_embeddings=512, pad_token_id=58100, decoder_start_token_id=58100,
    )  # fmt: skip
    with torch.device("meta"):
        hf_bart = transformers.BartForConditionalGeneration(bart).num_parameters()
        hf_marian = transformers.MarianMTModel(marian).num_parameters()
    assert on_meta("bart-base").num_parameters() == hf_bart == 139_420_416
    assert on_meta("marian-base").num_parameters() == hf_marian - 2 * 512 * 512 == 73_886_208


def test_small_presets_take_the_vocabulary_from_the_data():
    nano = on_meta("seq2seq-nano", vocab_size=67)
    assert nano.config.vocab_size == 67 and nano.config.norm_first
    assert nano.num_parameters(exclude_embeddings=True) == pytest.approx(0.9e6, rel=0.1)
    small = on_meta("seq2seq-small", n_decoder_layer=2)
    assert small.describe() == "encoder-decoder, 4+2 layers x 256 wide, context 256"


def test_attention_flops_count_the_encoder_the_causal_decoder_and_the_cross_attention():
    from lmforge.models.flops import attention_flops_per_token

    model = tiny("bart")
    C, context = 32, 24
    # per layer: encoder 4 C context (every key), decoder self 2 C context (half), cross 4 C context
    assert attention_flops_per_token(model, context) == 2 * (4 + 2 + 4) * C * context


def test_sampled_copies_each_read_their_own_source():
    """num_return_sequences expands each source into several rows; with top_k=1 every copy is greedy."""
    model = tiny("marian", std=0.5)
    ids, mask = padded_batch(model)
    greedy = generate(
        EncoderDecoderStepModel(model, ids, mask),
        [[START]] * 3,
        GenerationConfig(strategy="greedy", max_new_tokens=8, eos_id=EOS),
    )
    config = GenerationConfig(
        strategy="sample", top_k=1, num_return_sequences=3, max_new_tokens=8, eos_id=EOS
    )
    sampled = generate(
        EncoderDecoderStepModel(model, ids, mask),
        [[START]] * 3,
        config,
        generator=torch.Generator().manual_seed(0),
    )
    assert [[c.ids for c in row] for row in sampled] == [[row[0].ids] * 3 for row in greedy]


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    from lmforge.train.transforms import activation_checkpointing

    ids, mask = padded_batch(tiny("bart"))
    labels = torch.tensor([[5, 6, EOS, -100], [7, EOS, -100, -100], [8, 9, 10, EOS]])
    grads = []
    for checkpointed in (False, True):
        model = tiny("bart", dropout=0.0).train()
        if checkpointed:
            activation_checkpointing(model)
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for plain, recomputed in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(recomputed, plain)


def test_decoding_runs_under_bf16_autocast():
    """The preallocated caches take the autocast dtype of the keys, so a bf16 decode runs and agrees
    with its own one-pass forward to bf16 precision."""
    model = tiny("bart", std=0.1)
    ids, mask = padded_batch(model)
    decoder_ids = torch.tensor([[START, 7, 8, 9]] * 3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(ids, mask, decoder_ids).logits.float()
        state = model.start_decoding(model.encode(ids, mask), mask, max_length=4)
        assert state.keys.dtype == torch.bfloat16
        steps = torch.cat(
            [model.decode(decoder_ids[:, t : t + 1], state)[0] for t in range(4)], dim=1
        ).float()
    torch.testing.assert_close(steps, full, atol=0.1, rtol=0.05)
